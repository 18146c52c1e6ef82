/**
 * The local cluster (`mayfly cluster`, `npm run cluster`, and the cluster
 * fault test): the multi-host topology of README "Running a cluster" on one
 * machine, made of real parts.
 *
 *   - a bridge and one network namespace per worker host (infra/cluster/netns.ts)
 *   - a nats-server cluster with JetStream on the bridge address (infra/nats/cluster.ts),
 *     streams, KV buckets and object stores with MAYFLY_JS_REPLICAS replicas
 *   - gateways on 127.0.0.1 behind HAProxy (Debian) on 127.0.0.1:<port> (8080 by default),
 *     health-checked on /healthz
 *   - schedulers on this machine
 *   - one worker per namespace (`ip netns exec`), each with its own host id, run dir,
 *     memory budget, and only the bridge to reach NATS
 *
 * stop() ends every process by PID (reverse order) and removes the namespaces,
 * veths and the bridge, also after a failed start. Needs root (network namespaces).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { startDaemon, type Daemon } from '../../lib/daemon.js';
import { canConnect, freePort } from '../nats/nats-server.js';
import { startNatsCluster, type NatsClusterHandle } from '../nats/cluster.js';
import { ClusterNetwork } from './netns.js';

const CLI = path.join(PROJECT_ROOT, 'dist', 'cli', 'mayfly.js');

export interface LocalClusterOptions {
  /** Folder for logs, NATS stores, run dirs and the shared data dir (admin password, secrets key). */
  dir: string;
  hosts?: number;
  natsNodes?: number;
  /** MAYFLY_JS_REPLICAS (default: min(3, natsNodes)). */
  replicas?: number;
  gateways?: number;
  schedulers?: number;
  /** HAProxy's port on 127.0.0.1 (0: a free one). */
  port?: number;
  /** Each worker host's MAYFLY_MEMORY_BUDGET_MB. */
  memoryBudgetMiB?: number;
  /** More MAYFLY_* settings for every service. */
  env?: Record<string, string>;
  /** Where the services' output goes: their own log files (default) or this process's stderr. */
  output?: 'files' | 'inherit';
  log?: (line: string) => void;
}

export interface ClusterService {
  name: string;
  kind: 'gateway' | 'scheduler' | 'worker';
  proc: ChildProcess;
  logFile: string;
  /** Worker hosts: 1-based index of its namespace. */
  host?: number;
}

export class LocalCluster {
  readonly services: ClusterService[] = [];
  url = '';
  network: ClusterNetwork | null = null;
  nats: NatsClusterHandle | null = null;
  private haproxy: Daemon | null = null;
  private env: Record<string, string> = {};
  private stopped = false;

  private constructor(readonly opts: LocalClusterOptions) {}

  static async start(opts: LocalClusterOptions): Promise<LocalCluster> {
    if (process.getuid?.() !== 0) throw new Error('the local cluster needs root: it creates network namespaces, a bridge and veth pairs (run it with sudo)');
    const c = new LocalCluster(opts);
    try {
      await c.boot();
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  private log(line: string): void {
    (this.opts.log ?? ((l: string) => process.stderr.write(`mayfly cluster: ${l}\n`)))(line);
  }

  private async boot(): Promise<void> {
    const o = this.opts;
    const hosts = o.hosts ?? 3;
    const natsNodes = o.natsNodes ?? 3;
    fs.mkdirSync(o.dir, { recursive: true });
    this.network = await ClusterNetwork.create(hosts);
    this.log(`network: bridge ${this.network.bridge} ${this.network.gatewayAddress}/24, hosts ${this.network.hosts.map((h) => `${h.ns}=${h.address}`).join(' ')}`);
    this.nats = await startNatsCluster({ dir: path.join(o.dir, 'nats'), host: this.network.gatewayAddress, nodes: natsNodes });
    this.log(`nats-server cluster of ${natsNodes} on ${this.nats.url}`);
    this.env = {
      MAYFLY_NATS_URL: this.nats.url,
      MAYFLY_JS_REPLICAS: String(o.replicas ?? Math.min(3, natsNodes)),
      MAYFLY_DATA_DIR: path.join(o.dir, 'data'),
      MAYFLY_PROMETHEUS_SD_FILE: path.join(o.dir, 'data', 'prometheus', 'targets.json'),
      ...o.env,
    };
    // Schedulers first: the first one creates the streams and buckets (with their replicas).
    const schedulers = o.schedulers ?? 2;
    for (let i = 1; i <= schedulers; i++) this.spawn('scheduler', `s${i}`, {});
    const gatewayPorts: number[] = [];
    for (let i = 1; i <= (o.gateways ?? 2); i++) {
      const port = await freePort();
      gatewayPorts.push(port);
      this.spawn('gateway', `g${i}`, { MAYFLY_HOST: '127.0.0.1', MAYFLY_PORT: String(port) });
    }
    for (let i = 1; i <= hosts; i++) this.startWorker(i);
    const port = o.port === 0 ? await freePort() : (o.port ?? 8080);
    this.haproxy = await startHaproxy(path.join(o.dir, 'haproxy'), port, gatewayPorts);
    this.url = `http://127.0.0.1:${port}`;
    await this.waitFor(async () => (await fetch(`${this.url}/healthz`).catch(() => null))?.status === 200, 120_000, 'the gateways behind HAProxy');
    this.log(`HAProxy on ${this.url} in front of gateways ${gatewayPorts.map((p) => `127.0.0.1:${p}`).join(', ')}`);
  }

  /** Starts (or starts again) the worker of host i (1-based) in its namespace. */
  startWorker(i: number, env: Record<string, string> = {}): ClusterService {
    const h = this.network!.host(i);
    return this.spawn(
      'worker',
      `h${i}`,
      {
        MAYFLY_HOST_ID: `h${i}`,
        MAYFLY_RUN_DIR: path.join(this.opts.dir, 'run', `h${i}`),
        MAYFLY_MEMORY_BUDGET_MB: String(this.opts.memoryBudgetMiB ?? 2048),
        // Its /metrics on its own address, so the scheduler's Prometheus targets are reachable.
        MAYFLY_METRICS_HOST: h.address,
        ...env,
      },
      i,
    );
  }

  private spawn(kind: ClusterService['kind'], name: string, env: Record<string, string>, host?: number): ClusterService {
    const logFile = path.join(this.opts.dir, `${name}.log`);
    const out = this.opts.output === 'inherit' ? 'inherit' : fs.openSync(logFile, 'a');
    const argv = host ? ['netns', 'exec', this.network!.host(host).ns, process.execPath, CLI, kind] : [CLI, kind];
    // `ip netns exec` execs the command: the PID is the worker's own.
    const proc = spawn(host ? 'ip' : process.execPath, argv, { env: { ...process.env, ...this.env, ...env }, stdio: ['ignore', out, out] });
    if (typeof out === 'number') fs.closeSync(out);
    const s: ClusterService = { name, kind, proc, logFile, ...(host ? { host } : {}) };
    proc.once('exit', (code, signal) => {
      if (!this.stopped && !name.startsWith('killed-')) this.log(`${name} exited (${signal ?? code})`);
    });
    this.services.push(s);
    return s;
  }

  service(name: string): ClusterService {
    const s = this.services.find((x) => x.name === name);
    if (!s) throw new Error(`no service ${name}`);
    return s;
  }

  /** SIGKILLs a service (by PID) and waits for it to exit. */
  async kill(name: string): Promise<void> {
    const s = this.service(name);
    s.name = `killed-${name}`;
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => s.proc.once('exit', () => r()));
    s.proc.kill('SIGKILL');
    await exited;
  }

  logs(name: string): string {
    try {
      return fs.readFileSync(this.service(name).logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      const dead = this.services.find((s) => s.proc.exitCode !== null && !s.name.startsWith('killed-'));
      if (dead) throw new Error(`${dead.name} exited while waiting for ${what}:\n${this.logs(dead.name).slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Stops everything this cluster started, by PID, and removes its network. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(
      [...this.services].reverse().map(async (s) => {
        if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
        const exited = new Promise((r) => s.proc.once('exit', r));
        s.proc.kill('SIGTERM');
        const timer = setTimeout(() => s.proc.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    await this.haproxy?.stop();
    await this.nats?.stop();
    await this.network?.remove();
    // Template RAM (tmpfs) of workers that were killed.
    for (const s of this.services) if (s.kind === 'worker' && s.proc.pid) fs.rmSync(`/dev/shm/mayfly-${s.proc.pid}`, { recursive: true, force: true });
  }
}


/**
 * HAProxy config: round robin over the gateways, each checked on /healthz every second (out after two
 * failures: a gateway cut off NATS answers 503). Server timeouts above the longest sync call
 * (MAYFLY_MAX_TIMEOUT_MS 300 s + MAYFLY_INVOKE_OVERHEAD_MS 90 s). A request is re-sent to the other
 * gateway only when the connection failed (never after it was sent: a call must not run twice).
 */
export function renderHaproxyConfig(port: number, gatewayPorts: number[]): string {
  return [
    'global',
    '  maxconn 4096',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 400s',
    '  timeout server 400s',
    '  retries 2',
    '  option redispatch',
    'frontend mayfly',
    `  bind 127.0.0.1:${port}`,
    '  default_backend gateways',
    'backend gateways',
    '  balance roundrobin',
    '  option httpchk GET /healthz',
    '  http-check expect status 200',
    ...gatewayPorts.map((p, i) => `  server g${i + 1} 127.0.0.1:${p} check inter 1s fall 2 rise 2`),
    '',
  ].join('\n');
}

async function startHaproxy(dir: string, port: number, gatewayPorts: number[]): Promise<Daemon> {
  fs.mkdirSync(dir, { recursive: true });
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(cfg, renderHaproxyConfig(port, gatewayPorts));
  if (await canConnect(port)) throw new Error(`127.0.0.1:${port} is in use already; give the cluster another port (--port)`);
  return startDaemon({
    name: 'haproxy',
    command: 'haproxy',
    args: ['-f', cfg, '-db'], // -db: stay in the foreground, so it is stopped by its PID
    logFile: path.join(dir, 'haproxy.log'),
    ready: () => canConnect(port),
    readyTimeoutMs: 10_000,
    stopGraceMs: 3000,
  });
}
