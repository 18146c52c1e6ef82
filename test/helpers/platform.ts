/**
 * A whole Mayfly platform for end-to-end tests, made of real processes: a
 * nats-server, the scheduler, N workers (real QEMU VMs) and the gateway, each
 * started with the same CLI users run (`node dist/cli/mayfly.js <service>`).
 * `stop()` ends every process it started, by PID, and the test checks that no
 * QEMU of its workers survives.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { heartbeatSchema, SUBJECTS, type Heartbeat } from '../../contracts/bus.js';
import { freePort, startNatsServer, type NatsServerHandle } from '../../infra/nats/nats-server.js';

const CLI = path.join(PROJECT_ROOT, 'dist', 'cli', 'mayfly.js');

export interface ServiceProcess {
  name: string;
  proc: ChildProcess;
  logFile: string;
  runDir?: string;
}

export interface PlatformOptions {
  workers?: number;
  /** Scheduler replicas, named s1, s2, ... (default 1, named "scheduler"). */
  schedulers?: number;
  env?: Record<string, string>;
}

export class TestPlatform {
  readonly services: ServiceProcess[] = [];
  gatewayUrl = '';
  private readonly heartbeats = new Map<string, Heartbeat>();
  private nc: NatsConnection | null = null;

  private constructor(
    readonly dir: string,
    public nats: NatsServerHandle,
    private readonly env: Record<string, string>,
  ) {}

  static async start(opts: PlatformOptions = {}): Promise<TestPlatform> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfe-'));
    const nats = await startNatsServer({ storeDir: path.join(dir, 'nats'), logFile: path.join(dir, 'nats.log') });
    const port = await freePort();
    const p = new TestPlatform(dir, nats, {
      MAYFLY_NATS_URL: nats.url,
      MAYFLY_PORT: String(port),
      MAYFLY_LOG_LEVEL: 'info',
      MAYFLY_HEARTBEAT_MS: '300',
      MAYFLY_HOST_TTL_MS: '2000',
      MAYFLY_OFFER_TIMEOUT_MS: '2000',
      // The scheduler's Prometheus targets file (file_sd): inside the test's folder, never the checkout's .data.
      MAYFLY_PROMETHEUS_SD_FILE: path.join(dir, 'prometheus', 'targets.json'),
      // The functional suites talk to /system without credentials; test/security turns auth on.
      MAYFLY_AUTH: 'off',
      MAYFLY_DATA_DIR: path.join(dir, 'data'),
      ...opts.env,
    });
    p.gatewayUrl = `http://127.0.0.1:${port}`;
    try {
      p.nc = await connect({ servers: nats.url });
      p.nc.subscribe(SUBJECTS.heartbeat, {
        callback: (err, msg) => {
          if (err) return;
          const hb = heartbeatSchema.safeParse(JSON.parse(new TextDecoder().decode(msg.data)));
          if (hb.success) p.heartbeats.set(hb.data.hostId, hb.data);
        },
      });
      const replicas = opts.schedulers ?? 1;
      for (let i = 1; i <= replicas; i++) p.spawn('scheduler', {}, replicas === 1 ? 'scheduler' : `s${i}`);
      for (let i = 1; i <= (opts.workers ?? 1); i++) p.startWorker(`w${i}`);
      p.spawn('gateway');
      await p.waitFor(async () => (await fetch(`${p.gatewayUrl}/healthz`).catch(() => null))?.status === 200, 60_000, 'gateway /healthz');
    } catch (err) {
      await p.stop();
      throw err;
    }
    return p;
  }

  startWorker(hostId: string, env: Record<string, string> = {}): ServiceProcess {
    const runDir = path.join(os.tmpdir(), `mfw-${randomBytes(3).toString('hex')}`);
    return this.spawn('worker', { MAYFLY_HOST_ID: hostId, MAYFLY_RUN_DIR: runDir, ...env }, hostId, runDir);
  }

  /** Stops nats-server and starts it again on the same port with the same JetStream store. */
  async restartNats(): Promise<void> {
    const { port, storeDir } = this.nats;
    await this.nats.stop();
    this.nats = await startNatsServer({ storeDir, port, logFile: path.join(this.dir, 'nats.log') });
  }

  /** Starts one more service process (e.g. a scheduler replica to replace a killed one). */
  startService(service: 'scheduler' | 'gateway', name: string): ServiceProcess {
    return this.spawn(service, {}, name);
  }

  /** One more gateway on the same bus with its own port and settings; resolves with its URL once /healthz answers. */
  async startGateway(name: string, env: Record<string, string> = {}): Promise<string> {
    const port = await freePort();
    this.spawn('gateway', { MAYFLY_PORT: String(port), ...env }, name);
    const url = `http://127.0.0.1:${port}`;
    await this.waitFor(async () => (await fetch(`${url}/healthz`).catch(() => null))?.status === 200, 60_000, `${name} /healthz`);
    return url;
  }

  /** The last heartbeat of each worker seen on the bus. */
  hosts(): Heartbeat[] {
    return [...this.heartbeats.values()];
  }

  /** Waits until the given workers heartbeat with at least `pool` ready VMs each. */
  async waitForWorkers(hostIds: string[], pool = 0, timeoutMs = 180_000): Promise<void> {
    await this.waitFor(
      () =>
        hostIds.every((id) => {
          const hb = this.heartbeats.get(id);
          return hb !== undefined && Date.now() - hb.sentAt < 3000 && (hb.pools.node ?? 0) >= pool;
        }),
      timeoutMs,
      `workers ${hostIds.join(', ')} with ${pool} pooled VMs`,
    );
  }

  /** The Prometheus file_sd targets file the scheduler writes (MAYFLY_PROMETHEUS_SD_FILE). */
  metricsTargetsFile(): string {
    return this.env.MAYFLY_PROMETHEUS_SD_FILE ?? path.join(this.env.MAYFLY_DATA_DIR ?? this.dir, 'prometheus', 'targets.json');
  }

  service(name: string): ServiceProcess {
    const s = this.services.find((x) => x.name === name);
    if (!s) throw new Error(`no service ${name}`);
    return s;
  }

  /** PIDs of QEMU processes started by this platform's workers, or by one of them (found by their run folders). */
  qemuPids(worker?: string): number[] {
    const dirs = this.services
      .filter((s) => worker === undefined || s.name === worker)
      .map((s) => s.runDir)
      .filter((d): d is string => !!d);
    const out: number[] = [];
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
        if (cmd.startsWith('qemu-system') && dirs.some((d) => cmd.includes(d))) out.push(Number(e));
      } catch {
        // gone
      }
    }
    return out;
  }

  logs(name: string): string {
    try {
      return fs.readFileSync(this.service(name).logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
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
    await this.nc?.close().catch(() => {});
    await this.nats.stop();
    for (const s of this.services) {
      if (s.runDir) fs.rmSync(s.runDir, { recursive: true, force: true });
      // A worker killed by the test could not remove its template RAM (tmpfs).
      if (s.runDir && s.proc.pid) fs.rmSync(`/dev/shm/mayfly-${s.proc.pid}`, { recursive: true, force: true });
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      const dead = this.services.find((s) => s.proc.exitCode !== null && !s.name.startsWith('killed-'));
      if (dead) {
        throw new Error(`${dead.name} exited while waiting for ${what}:\n${this.logs(dead.name).slice(-3000)}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Marks a service as deliberately killed so waitFor does not treat its exit as a failure. */
  kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const s = this.service(name);
    s.name = `killed-${name}`;
    const exited = new Promise<void>((r) => s.proc.once('exit', () => r()));
    s.proc.kill(signal);
    return exited;
  }

  private spawn(service: string, env: Record<string, string> = {}, name = service, runDir?: string): ServiceProcess {
    const logFile = path.join(this.dir, `${name}.log`);
    const out = fs.openSync(logFile, 'a');
    const proc = spawn(process.execPath, [CLI, service], {
      env: { ...process.env, ...this.env, ...env },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    const s: ServiceProcess = { name, proc, logFile, ...(runDir ? { runDir } : {}) };
    this.services.push(s);
    return s;
  }
}
