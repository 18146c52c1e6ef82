/**
 * A local nats-server cluster with JetStream (Debian's nats-server 2.9): N nodes
 * on one address (the local cluster's bridge address, so workers in network
 * namespaces reach them), each with its own client port, route port and store.
 * The config is renderClusterNodeConfig: the same shape as the shipped example
 * infra/nats/cluster-node.conf for real hosts. Every node is a daemon stopped by
 * its PID; kill() SIGKILLs one (fault tests), restart() starts it again on its
 * ports with its store.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { startDaemon, type Daemon } from '../../lib/daemon.js';
import { freePort } from './nats-server.js';

export interface ClusterNodeConfig {
  name: string;
  host: string;
  port: number;
  routePort: number;
  /** host:routePort of every node (its own is skipped). */
  routes: string[];
  storeDir: string;
  clusterName?: string;
}

/**
 * One node's config. Short pings (2 s, 2 out) on both sides: a client cut off the network is
 * dropped within ~6 s, so queue-group messages stop going to it (worker/bus-cutoff.ts).
 */
export function renderClusterNodeConfig(c: ClusterNodeConfig): string {
  const self = `${c.host}:${c.routePort}`;
  const others = c.routes.filter((r) => r !== self);
  // One node: no cluster block (a lone clustered JetStream would wait for peers).
  const cluster = others.length
    ? ['cluster {', `  name: ${c.clusterName ?? 'mayfly'}`, `  listen: ${self}`, `  routes: [${others.map((r) => `nats-route://${r}`).join(', ')}]`, '}']
    : [];
  return [
    `server_name: ${c.name}`,
    `listen: ${c.host}:${c.port}`,
    // 8 MiB: a 6 MiB request body plus its base64 growth and the message envelope.
    'max_payload: 8388608',
    'ping_interval: "2s"',
    'ping_max: 2',
    'jetstream {',
    `  store_dir: ${JSON.stringify(c.storeDir)}`,
    '  max_memory_store: 256MB',
    '  max_file_store: 4GB',
    '}',
    ...cluster,
    '',
  ].join('\n');
}

export interface ClusterNode {
  name: string;
  url: string;
  port: number;
  pid: number;
  /** SIGKILL (no clean shutdown). */
  kill(): Promise<void>;
  stop(): Promise<void>;
  /** Starts it again on the same ports with the same store (after kill or stop). */
  restart(): Promise<void>;
}

export interface NatsClusterHandle {
  nodes: ClusterNode[];
  /** MAYFLY_NATS_URL for the services: every node, comma-separated. */
  url: string;
  /** The node (server_name) that leads a stream's RAFT group, or null when none is known. */
  streamLeader(stream: string): Promise<string | null>;
  stop(): Promise<void>;
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Ports free on `host` (asked on 127.0.0.1: the OS keeps the port space per protocol, not per address). */
async function ports(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}

export async function startNatsCluster(opts: { dir: string; host: string; nodes?: number; logDir?: string; readyTimeoutMs?: number }): Promise<NatsClusterHandle> {
  const n = opts.nodes ?? 3;
  const p = await ports(2 * n);
  const specs = Array.from({ length: n }, (_, i) => ({
    name: `n${i + 1}`,
    port: p[2 * i]!,
    routePort: p[2 * i + 1]!,
    storeDir: path.join(opts.dir, `n${i + 1}`),
  }));
  const routes = specs.map((s) => `${opts.host}:${s.routePort}`);
  const daemons = new Map<string, Daemon>();

  async function startNode(s: (typeof specs)[number]): Promise<void> {
    fs.mkdirSync(s.storeDir, { recursive: true });
    const configFile = path.join(s.storeDir, 'nats-server.conf');
    fs.writeFileSync(configFile, renderClusterNodeConfig({ ...s, host: opts.host, routes }));
    daemons.set(
      s.name,
      await startDaemon({
        name: `nats-server ${s.name}`,
        command: 'nats-server',
        args: ['-c', configFile],
        logFile: path.join(opts.logDir ?? opts.dir, `nats-${s.name}.log`),
        ready: () => canConnect(opts.host, s.port),
        readyTimeoutMs: 15_000,
        pollMs: 20,
        stopGraceMs: 5000,
      }),
    );
  }

  const url = specs.map((s) => `nats://${opts.host}:${s.port}`).join(',');
  const handle: NatsClusterHandle = {
    url,
    nodes: specs.map((s) => ({
      name: s.name,
      url: `nats://${opts.host}:${s.port}`,
      port: s.port,
      get pid() {
        return daemons.get(s.name)?.pid ?? -1;
      },
      async kill() {
        const d = daemons.get(s.name);
        if (!d) return;
        try {
          process.kill(d.pid, 'SIGKILL');
        } catch {
          // gone already
        }
        await d.stop(); // waits for the exit
      },
      stop: async () => daemons.get(s.name)?.stop(),
      restart: () => startNode(s),
    })),
    async streamLeader(stream) {
      const nc = await connect({ servers: url.split(','), timeout: 2000 }).catch(() => null);
      if (!nc) return null;
      try {
        const jsm = await jetstreamManager(nc);
        return (await jsm.streams.info(stream)).cluster?.leader ?? null;
      } catch {
        return null;
      } finally {
        await nc.close().catch(() => {});
      }
    },
    async stop() {
      await Promise.all([...daemons.values()].map((d) => d.stop()));
    },
  };
  try {
    await Promise.all(specs.map((s) => startNode(s)));
    await jetStreamReady(url, opts.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}

/** Waits until the cluster has elected its JetStream meta leader (account info answers). */
async function jetStreamReady(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const nc = await connect({ servers: url.split(','), maxReconnectAttempts: -1 });
  try {
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2000 });
        await jsm.getAccountInfo();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`the NATS cluster's JetStream was not ready within ${timeoutMs} ms: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } finally {
    await nc.close().catch(() => {});
  }
}
