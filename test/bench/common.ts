/**
 * What the benchmarks share: the handlers they run (identical code in Mayfly
 * and in the host baselines), cleanup that runs even on failure or Ctrl-C,
 * the host baseline servers, an HTTP client that times calls, and helpers
 * around the test platform (deploy, pool state, the worker's own timings).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { TestPlatform, type PlatformOptions } from '../helpers/platform.js';
import { readMemAvailableMiB } from '../../worker/host-memory.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const RUNNER = path.join(HERE, 'baseline-runner.js');
const SERVER = path.join(HERE, 'baseline-server.js');

// ---------------------------------------------------------------- handlers

/** Returns at once: what is left is the platform's own cost (hops, VM start). */
export const TRIVIAL_HANDLER = `export async function handler(event) {
  return { ok: true, echo: event.body };
}
`;

/** CPU-bound: FNV-style hash over `event.body` iterations (default 5M); pure JS, no allocation. */
export const CPU_HANDLER = `export async function handler(event) {
  const n = Number(event.body) || 5000000;
  let h = 2166136261;
  for (let i = 0; i < n; i++) { h ^= i & 0xff; h = Math.imul(h, 16777619); }
  return { h: h >>> 0, n };
}
`;

// ---------------------------------------------------------------- env

export function envInt(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${v}"`);
  return n;
}

export function envList(name: string, def: number[]): number[] {
  const v = process.env[name];
  if (!v) return def;
  const list = v.split(',').map((x) => Number(x.trim()));
  if (list.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`${name} must be a comma-separated list of positive integers`);
  return list;
}

// ---------------------------------------------------------------- cleanup

type Cleanup = { what: string; run: () => Promise<void> };
const cleanups: Cleanup[] = [];
let cleaning: Promise<void> | null = null;

/** Registers an undo step; steps run in reverse order, once each, at the end of the bench or on a signal. */
export function onCleanup(what: string, run: () => Promise<void>): void {
  cleanups.push({ what, run });
}

function runCleanups(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      const c = cleanups.pop()!;
      try {
        await c.run();
      } catch (err) {
        process.stderr.write(`cleanup "${c.what}" failed: ${(err as Error).message}\n`);
      }
    }
  })();
  return cleaning;
}

/**
 * Starts something whose stop must run even when the start is interrupted: the
 * stop is registered before the start is awaited, so a Ctrl-C during a slow
 * start still stops what did start.
 */
export async function managed<T>(what: string, start: Promise<T>, stop: (t: T) => Promise<void>): Promise<T> {
  onCleanup(what, async () => {
    let t: T;
    try {
      t = await start;
    } catch {
      return; // it did not start: its own error path cleaned up
    }
    await stop(t);
  });
  return start;
}

/** Runs one benchmark: header, main, and cleanup whatever happens (including SIGINT/SIGTERM). */
export async function runBench(name: string, main: () => Promise<void>): Promise<void> {
  let stopping = false;
  // `on`, not `once`: a second signal (Ctrl-C reaches this process and all.ts forwards it too) must not kill the cleanup.
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\n${name}: ${sig}, cleaning up\n`);
    void runCleanups().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.stdout.write(`\n== bench ${name} == ${machineLine()}\n`);
  try {
    await main();
  } catch (err) {
    process.stderr.write(`${name} failed: ${(err as Error).stack ?? String(err)}\n`);
    process.stdout.write(`verdict ${name}: FAILED (${(err as Error).message.split('\n')[0]})\n`);
    process.exitCode = 1;
  } finally {
    await runCleanups();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

export function machineLine(): string {
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  return `${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, load ${load}, node ${process.version}, ${new Date().toISOString()}`;
}

export function progress(msg: string): void {
  process.stderr.write(`  ${msg}\n`);
}

export function verdict(name: string, text: string): void {
  process.stdout.write(`verdict ${name}: ${text}\n`);
}

/** MemAvailable from /proc/meminfo, MiB. */
export function memAvailableMiB(): number {
  return readMemAvailableMiB() ?? NaN;
}

/** CPU seconds (user + system) of processes, including their reaped children (cutime, cstime). */
export function cpuSeconds(pids: number[], withChildren = true): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      // fields 14-17 of proc(5): utime, stime, cutime, cstime (f[0] is field 3)
      ticks += Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0);
    } catch {
      // gone
    }
  }
  return ticks / 100; // USER_HZ
}

/** Busy and total CPU time of the whole machine so far (/proc/stat), seconds. */
export function machineCpu(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: (total - idle) / 100, total: total / 100 };
}

/** Wall time of `node -e 0` (the host's own process start), ms. */
export function nodeSpawnMs(): number {
  const t = performance.now();
  spawnSync(process.execPath, ['-e', '0']);
  return performance.now() - t;
}

// ---------------------------------------------------------------- host baselines

export interface BaselineServer {
  url: string;
  dir: string;
  pid: number;
  stop(): Promise<void>;
}

/** Writes `handlers` (name → source) to a folder and serves them with baseline-server.js in `mode`. */
export function startBaselineServer(mode: 'http' | 'watchdog', handlers: Record<string, string>): Promise<BaselineServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfbench-'));
  for (const [name, code] of Object.entries(handlers)) fs.writeFileSync(path.join(dir, `${name}.mjs`), code);
  const proc = spawn(process.execPath, [SERVER, mode, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return managed(
    `baseline ${mode} server`,
    new Promise<BaselineServer>((resolve, reject) => {
      const rl = readline.createInterface({ input: proc.stdout! });
      const timer = setTimeout(() => reject(new Error(`baseline ${mode} server did not start`)), 15_000);
      rl.once('line', (line) => {
        clearTimeout(timer);
        const port = Number(/^listening (\d+)/.exec(line)?.[1]);
        if (!port) reject(new Error(`baseline server said: ${line}`));
        else resolve({ url: `http://127.0.0.1:${port}`, dir, pid: proc.pid!, stop });
      });
      void exited.then(() => reject(new Error(`baseline ${mode} server exited`)));
    }).catch(async (err) => {
      await stop();
      throw err;
    }),
    (s) => s.stop(),
  );
}

/** One process per event, no HTTP: `node baseline-runner.js handler.mjs` with the event on stdin. */
export function spawnHandlerMs(handlerFile: string, body: string): Promise<number> {
  const event = JSON.stringify({ method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false });
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RUNNER, handlerFile], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 && out ? resolve(performance.now() - t) : reject(new Error(`runner exited ${code}`))));
    child.stdin.end(event);
  });
}

// ---------------------------------------------------------------- HTTP

export interface CallResult {
  ms: number;
  status: number;
  /** X-Mayfly-Start (cold, pool, clone, warm); null from the baselines. */
  start: string | null;
  callId: string | null;
  /** X-Duration-Seconds in ms: the gateway's own time for the call (accepted → result). */
  gatewayMs: number | null;
  body: string;
}

export async function call(url: string, body: string): Promise<CallResult> {
  const t = performance.now();
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
  const text = await res.text();
  const ms = performance.now() - t;
  const d = res.headers.get('x-duration-seconds');
  return {
    ms,
    status: res.status,
    start: res.headers.get('x-mayfly-start'),
    callId: res.headers.get('x-call-id'),
    gatewayMs: d === null ? null : Number(d) * 1000,
    body: text,
  };
}

/** A call that must succeed with 200. */
export async function callOk(url: string, body: string): Promise<CallResult> {
  const r = await call(url, body);
  if (r.status !== 200) throw new Error(`POST ${url} answered ${r.status}: ${r.body.slice(0, 500)}`);
  return r;
}

// ---------------------------------------------------------------- platform

export async function startPlatform(opts: PlatformOptions): Promise<TestPlatform> {
  const p = await managed('platform', TestPlatform.start(opts), async (p) => {
    await p.stop();
    const left = p.qemuPids();
    if (left.length) process.stderr.write(`WARNING: QEMU processes left after stopping the platform: ${left.join(', ')}\n`);
  });
  return p;
}

export async function deploy(
  p: TestPlatform,
  service: string,
  code: string,
  isolation: 'per-request' | 'per-function',
  annotations: Record<string, string> = {},
): Promise<string> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, code, isolation, annotations }),
  });
  if (res.status !== 202) throw new Error(`deploy ${service}: ${res.status} ${await res.text()}`);
  return `${p.gatewayUrl}/function/${service}`;
}

/**
 * Waits until a heartbeat sent after `since` (ms epoch) shows the worker's
 * pool full (`pool` ready VMs) and nothing booting: the pool has refilled.
 */
export async function waitPoolFull(p: TestPlatform, hostId: string, pool: number, since = Date.now(), timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hb = p.hosts().find((h) => h.hostId === hostId);
    if (hb && hb.sentAt > since && (hb.pools.node ?? 0) >= pool && (hb.vms.booting ?? 0) === 0) return;
    if (Date.now() > deadline) throw new Error(`the pool of ${hostId} did not refill to ${pool} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

export interface RefillCounters {
  /** mayfly_pool_refills_total: VMs added to the pool. */
  refills: number;
  /** mayfly_pool_refill_seconds sum and count: time to make one pool VM. */
  seconds: number;
  count: number;
}

/** The worker's pool refill counters, scraped from its /metrics (announced as `metricsUrl` in its heartbeat); null when absent. */
export async function workerRefills(p: TestPlatform, hostId = 'w1'): Promise<RefillCounters | null> {
  const url = p.hosts().find((h) => h.hostId === hostId)?.metricsUrl;
  if (!url) return null;
  try {
    const text = await (await fetch(url)).text();
    const sum = (name: string) => {
      let total = 0;
      let seen = false;
      for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'gm'))) {
        total += Number(m[1]);
        seen = true;
      }
      return seen ? total : NaN;
    };
    const refills = sum('mayfly_pool_refills_total');
    if (!Number.isFinite(refills)) return null;
    return { refills, seconds: sum('mayfly_pool_refill_seconds_sum'), count: sum('mayfly_pool_refill_seconds_count') };
  } catch {
    return null;
  }
}

export interface WorkerCall {
  callId: string;
  start: string;
  /** The worker's time to obtain the VM: unpause (+ init for pool/clone VMs), or a whole clone/boot. */
  startMs: number;
}

/** The worker's `call done` log lines (JSON, pino): how each call's VM was obtained and how long it took. */
export function workerCalls(p: TestPlatform, worker = 'w1'): Map<string, WorkerCall> {
  const out = new Map<string, WorkerCall>();
  for (const line of p.logs(worker).split('\n')) {
    if (!line.includes('"call done"')) continue;
    try {
      const j = JSON.parse(line) as { callId?: string; start?: string; startMs?: number };
      if (j.callId && j.start && typeof j.startMs === 'number') out.set(j.callId, { callId: j.callId, start: j.start, startMs: j.startMs });
    } catch {
      // not JSON
    }
  }
  return out;
}

export function countBy<T>(items: T[], key: (t: T) => string): string {
  const m = new Map<string, number>();
  for (const i of items) m.set(key(i), (m.get(key(i)) ?? 0) + 1);
  return [...m.entries()].map(([k, v]) => `${k} ${v}`).join(', ');
}

export { sleep };
