/**
 * `mayfly cluster` (also `mayfly up --hosts N`, `npm run cluster`): the local
 * cluster of infra/cluster/local-cluster.ts — a 3-node NATS cluster with
 * replicated JetStream, 2 gateways behind HAProxy on 127.0.0.1:8080, 2
 * schedulers, and N worker hosts, each in its own network namespace on a
 * bridge. Ctrl-C / SIGTERM stops all of it and removes the namespaces. Root only.
 */
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { loadConfig } from '../contracts/config.js';
import { ensureConfiguredImage } from '../functions/image/image-options.js';
import { LocalCluster } from '../infra/cluster/local-cluster.js';
import { printProgress } from './progress.js';

export const CLUSTER_USAGE = `mayfly cluster [--hosts N] [--nats-nodes N] [--replicas N] [--gateways N] [--schedulers N] [--port P] [--dir DIR]
  defaults: 3 hosts, 3 NATS nodes, replicas min(3, nodes), 2 gateways, 2 schedulers, port 8080, dir <data dir>/cluster`;

function parse(args: string[]): Record<string, number | string> | string {
  const out: Record<string, number | string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const v = args[i + 1];
    if (!a.startsWith('--') || v === undefined) return `unexpected argument "${a}"`;
    const key = a.slice(2);
    if (key === 'dir') out.dir = v;
    else if (['hosts', 'nats-nodes', 'replicas', 'gateways', 'schedulers', 'port'].includes(key)) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) return `--${key} takes a whole number, not "${v}"`;
      out[key] = n;
    } else return `unknown option "${a}"`;
    i++;
  }
  if ((out.hosts as number) < 1 || (out.hosts as number) > 16) return '--hosts takes 1 to 16';
  if ((out['nats-nodes'] as number) < 1 || (out['nats-nodes'] as number) > 5) return '--nats-nodes takes 1 to 5';
  return out;
}

export async function clusterCommand(args: string[]): Promise<number> {
  const opts = parse(args);
  if (typeof opts === 'string') {
    process.stderr.write(`mayfly cluster: ${opts}\n${CLUSTER_USAGE}\n`);
    return 2;
  }
  const config = loadConfig();
  const replicas = (opts.replicas as number | undefined) ?? Math.min(3, (opts['nats-nodes'] as number | undefined) ?? 3);
  if (replicas > ((opts['nats-nodes'] as number | undefined) ?? 3)) {
    process.stderr.write('mayfly cluster: --replicas cannot exceed --nats-nodes\n');
    return 2;
  }
  await ensureConfiguredImage(config, { onProgress: printProgress });
  const dir = (opts.dir as string | undefined) ?? path.join(config.MAYFLY_DATA_DIR, 'cluster');
  fs.mkdirSync(dir, { recursive: true });
  let cluster: LocalCluster | null = null;
  let stopping = false;
  const stop = async (code: number): Promise<never> => {
    if (!stopping) {
      stopping = true;
      process.stderr.write('mayfly cluster: stopping every process and removing the namespaces\n');
      await cluster?.stop();
    }
    process.exit(code);
  };
  process.once('SIGINT', () => void stop(0));
  process.once('SIGTERM', () => void stop(0));
  cluster = await LocalCluster.start({
    dir,
    hosts: (opts.hosts as number | undefined) ?? 3,
    natsNodes: (opts['nats-nodes'] as number | undefined) ?? 3,
    replicas,
    gateways: (opts.gateways as number | undefined) ?? 2,
    schedulers: (opts.schedulers as number | undefined) ?? 2,
    port: (opts.port as number | undefined) ?? 8080,
    memoryBudgetMiB: Math.max(256, Math.floor(os.totalmem() / 1024 / 1024 / 2 / ((opts.hosts as number | undefined) ?? 3))),
  });
  process.stderr.write(`mayfly cluster: up on ${cluster.url}; logs in ${dir} (Ctrl-C stops everything)\n`);
  return new Promise<number>(() => {});
}
