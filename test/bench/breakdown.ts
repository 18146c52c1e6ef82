/**
 * `npm run bench:breakdown`: where the time and the CPU of one call go.
 *
 * 1. Wall time per step. Sequential traced calls (`X-Mayfly-Trace: 1`, answered
 *    in `Server-Timing`, lib/trace.ts) of a per-function function (warm VM) and
 *    of a per-request function deployed with no annotations (the default), one
 *    at a time with BENCH_PAUSE_MS between calls; the median of every step
 *    (each step is the time since the previous stamp, whichever process made it).
 * 2. CPU per call per process. A closed loop of BENCH_CLIENTS_WARM (8) clients on
 *    the warm function and BENCH_CLIENTS_REQ (4) on the per-request one for
 *    BENCH_LOAD_S (10) seconds each; CPU of the gateway, nats-server,
 *    scheduler, worker and its QEMU processes (live ones from /proc, reaped ones
 *    from the worker's cutime), divided by the calls completed.
 * 3. The floor: the same handler called straight on a guest on a VmHost in
 *    this process, with no gateway, bus, scheduler or worker around it: a call
 *    on a running VM, the same with QMP cont/stop around it, and a per-request
 *    VM (a clone of a function snapshot, resumed and paused ahead: cont + call),
 *    with the CPU of that VM's whole life.
 * The baseline rows are the host's own: an in-process Node `http` server and a
 * `node` spawned per request, with the same handler, measured in the same run.
 */
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import { parseServerTiming } from '../../lib/trace.js';
import type { GuestSession } from '../../worker/guest-session.js';
import { VmHost } from '../../worker/vm-host.js';
import type { TestPlatform } from '../helpers/platform.js';
import {
  cpuSeconds,
  deploy,
  envInt,
  managed,
  progress,
  runBench,
  sleep,
  startBaselineServer,
  startPlatform,
  TRIVIAL_HANDLER,
  verdict,
} from './common.js';
import { grid, percentile, row, table, type Row } from './stats.js';

const CALLS = envInt('BENCH_CALLS', 40);
const PAUSE_MS = envInt('BENCH_PAUSE_MS', 300);
const LOAD_S = envInt('BENCH_LOAD_S', 10);
const CLIENTS_WARM = envInt('BENCH_CLIENTS_WARM', 8);
const CLIENTS_REQ = envInt('BENCH_CLIENTS_REQ', 4);
const FLOOR_CALLS = envInt('BENCH_FLOOR_CALLS', 40);

interface Traced {
  ms: number;
  start: string | null;
  steps: Array<[string, number]>;
}

async function traced(url: string, body: string): Promise<Traced> {
  const t = performance.now();
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'text/plain', 'x-mayfly-trace': '1' } });
  const text = await res.text();
  const ms = performance.now() - t;
  if (res.status !== 200) throw new Error(`POST ${url}: ${res.status} ${text.slice(0, 300)}`);
  return { ms, start: res.headers.get('x-mayfly-start'), steps: parseServerTiming(res.headers.get('server-timing') ?? '') };
}

/** Median of every step, in the order the steps first appeared. */
function stepTable(calls: Traced[]): Array<[string, number, number]> {
  const byStep = new Map<string, number[]>();
  for (const c of calls) for (const [name, ms] of c.steps) (byStep.get(name) ?? byStep.set(name, []).get(name)!).push(ms);
  return [...byStep.entries()].map(([name, ms]) => [name, percentile(ms, 50), ms.length]);
}

const STEP_MEANING: Record<string, string> = {
  'gw-body': 'gateway: route, auth, function lookup, body read',
  'gw-send': 'gateway: build the event, encode the request',
  'sched-recv': 'bus: gateway -> scheduler',
  'sched-offer': 'scheduler: decode, validate, place',
  'worker-recv': 'bus: -> worker (offer)',
  'worker-vm': 'worker: admit, get the VM (unpause / clone / init)',
  'guest-result': 'guest: run frame -> handler -> result frame',
  'worker-publish': 'worker: build the result',
  'gw-result': 'bus: worker -> gateway',
  'gw-reply': 'gateway: record, map the result, send headers',
  total: 'total inside the platform (first stamp to last)',
};

interface ProcCpu {
  name: string;
  pids: () => number[];
}

/** CPU seconds per process group now; QEMU = live QEMUs + what the worker reaped (cutime). */
function cpuSnapshot(p: TestPlatform): Record<string, number> {
  const svc = (name: string) => p.services.filter((s) => s.name === name).map((s) => s.proc.pid!).filter(Boolean);
  const workerPids = svc('w1');
  const self = cpuSeconds(workerPids, false);
  const reaped = cpuSeconds(workerPids, true) - self;
  return {
    gateway: cpuSeconds(svc('gateway'), false),
    'nats-server': cpuSeconds([p.nats.pid], false),
    scheduler: cpuSeconds(svc('scheduler'), false),
    worker: self,
    qemu: reaped + cpuSeconds(p.qemuPids('w1'), false),
  };
}

async function load(url: string, clients: number, seconds: number): Promise<{ calls: number; errors: number; lat: number[]; wall: number }> {
  const end = performance.now() + seconds * 1000;
  let calls = 0;
  let errors = 0;
  const lat: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; performance.now() < end; i++) {
        const t = performance.now();
        try {
          const res = await fetch(url, { method: 'POST', body: `c${c}-${i}`, headers: { 'content-type': 'text/plain' } });
          await res.arrayBuffer();
          if (res.status === 200) {
            calls++;
            lat.push(performance.now() - t);
          } else errors++;
        } catch {
          errors++;
        }
      }
    }),
  );
  return { calls, errors, lat, wall: (performance.now() - t0) / 1000 };
}

async function cpuUnderLoad(p: TestPlatform, url: string, clients: number) {
  const before = cpuSnapshot(p);
  const r = await load(url, clients, LOAD_S);
  // QEMUs of the last calls are reaped a moment later (per-request): let them go before reading.
  await sleep(300);
  const after = cpuSnapshot(p);
  const perCall: Record<string, number> = {};
  for (const k of Object.keys(before)) perCall[k] = ((after[k]! - before[k]!) * 1000) / Math.max(1, r.calls);
  return { ...r, perCall, perSecond: r.calls / r.wall };
}

const ev = (body: string): InvocationEvent => ({ method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false });

/**
 * The throughput floor: `vms` running VMs with the handler loaded, one caller
 * each calling back to back on the guest channel (no platform), for LOAD_S
 * seconds: calls per second and QEMU CPU per call.
 */
async function floorUnderLoad(host: VmHost, vms: number, fnInit: Parameters<GuestSession['init']>[0]): Promise<{ perSecond: number; cpuPerCall: number; idleCpuPerVmSecond: number }> {
  const sessions: GuestSession[] = [];
  try {
    for (let i = 0; i < vms; i++) {
      const s = await host.prepareClone(128);
      sessions.push(s);
      await s.resumeClone(randomBytes(64));
      await s.init(fnInit);
      for (let j = 0; j < 10; j++) await s.invoke({ callId: `w${j}`, event: ev('x'), timeoutMs: 10_000 });
    }
    const pids = host.driver.pids();
    const idle0 = cpuSeconds(pids, false);
    await sleep(3000);
    const idleCpuPerVmSecond = ((cpuSeconds(pids, false) - idle0) * 1000) / 3 / vms;
    const c0 = cpuSeconds(pids, false);
    const end = performance.now() + LOAD_S * 1000;
    const t0 = performance.now();
    let calls = 0;
    await Promise.all(
      sessions.map(async (s, k) => {
        for (let i = 0; performance.now() < end; i++) {
          await s.invoke({ callId: `l${k}-${i}`, event: ev(`l${i}`), timeoutMs: 10_000 });
          calls++;
        }
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    return { perSecond: calls / secs, cpuPerCall: ((cpuSeconds(pids, false) - c0) * 1000) / calls, idleCpuPerVmSecond };
  } finally {
    await Promise.all(sessions.map((s) => s.destroy('floor done')));
  }
}

const cloneSteps: Record<string, { wall: number[]; cpu: number[] }> = {};

/** The floor: the handler on a guest with nothing of the platform around it. */
async function floor(): Promise<{ rows: Row[]; base: Row; cpuPerRequestVm: number; load: Awaited<ReturnType<typeof floorUnderLoad>> }> {
  const config = loadConfig();
  const host = await managed('VmHost', VmHost.open(config), (h) => h.close());
  const fnInit = { functionName: 'floor', code: TRIVIAL_HANDLER, handler: 'handler', env: {}, memoryLimitInMB: 128 };
  const running = row('floor: call on a running VM');
  const unpaused = row('floor: QMP cont + call + QMP stop');
  const perRequest = row('floor: per-request VM (ready snapshot clone): cont + call');
  const base = row('floor baseline: same handler, direct JS call on the host');
  const mod = (await import(`data:text/javascript,${encodeURIComponent(TRIVIAL_HANDLER)}`)) as { handler: (e: unknown) => Promise<unknown> };

  const session = await host.prepareClone(128);
  try {
    await session.resumeClone(randomBytes(64));
    await session.init(fnInit);
    for (let i = 0; i < 10; i++) await session.invoke({ callId: `w${i}`, event: ev('x'), timeoutMs: 10_000 });
    for (let i = 0; i < FLOOR_CALLS; i++) {
      let t = performance.now();
      await session.invoke({ callId: `r${i}`, event: ev(`r${i}`), timeoutMs: 10_000 });
      running.samples.push(performance.now() - t);
      t = performance.now();
      await host.driver.start(session.vm);
      await session.invoke({ callId: `u${i}`, event: ev(`u${i}`), timeoutMs: 10_000 });
      await host.driver.pause(session.vm);
      unpaused.samples.push(performance.now() - t);
      await host.driver.start(session.vm);
      t = performance.now();
      await mod.handler(ev(`b${i}`));
      base.samples.push(performance.now() - t);
    }
  } finally {
    await session.destroy('floor done');
  }

  // Per-request: a function snapshot, then clones of it made ahead (resumed, re-keyed, warmed, paused),
  // each step's wall time and its QEMU's CPU time (/proc/<pid>/stat, 10 ms ticks: medians of many).
  const template = await host.functionTemplate('floor@1', fnInit);
  const childCpu = () => cpuSeconds([process.pid]) - cpuSeconds([process.pid], false);
  const cpu0 = childCpu();
  const n = Math.max(5, Math.floor(FLOOR_CALLS / 2));
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    const s: GuestSession = await host.prepareClone(128, template);
    const pid = (s.vm as unknown as { proc?: { pid?: number } }).proc?.pid ?? 0;
    let c = cpuSeconds([pid]) * 1000;
    const step = (name: string, gone = false) => {
      const now = cpuSeconds([pid]) * 1000;
      (cloneSteps[name] ??= { wall: [], cpu: [] }).wall.push(performance.now() - t);
      // Once reaped, the process's CPU is in this process's cutime (the life total above), not in /proc/<pid>.
      if (!gone) cloneSteps[name]!.cpu.push(now - c);
      c = now;
      t = performance.now();
    };
    step('QEMU start + restore (prepareClone)');
    try {
      await s.resumeClone(randomBytes(64));
      step('resume + reseed (first guest code in this process)');
      await s.warmup();
      step('warm-up of the invocation path');
      await host.driver.pause(s.vm);
      step('pause (QMP stop)');
      await host.driver.start(s.vm);
      await s.invoke({ callId: `p${i}`, event: ev(`p${i}`), timeoutMs: 10_000 });
      perRequest.samples.push(performance.now() - t);
      step('cont + the call');
    } finally {
      await s.destroy('floor done');
      step('destroy (SIGKILL, reap)', true);
    }
  }
  await sleep(200);
  const cpuPerRequestVm = ((childCpu() - cpu0) * 1000) / n;
  await host.dropFunctionTemplate('floor@1');
  const load = await floorUnderLoad(host, CLIENTS_WARM, fnInit);
  return { rows: [running, unpaused, perRequest], base, cpuPerRequestVm, load };
}

function cloneStepTable(): string {
  return grid(
    ['per-request VM, by step (medians)', 'wall ms', 'QEMU CPU ms'],
    Object.entries(cloneSteps).map(([name, v]) => [name, percentile(v.wall, 50), v.cpu.length ? percentile(v.cpu, 50) : '-']),
  );
}

await runBench('breakdown', async () => {
  if (process.env.BENCH_FLOOR_ONLY === '1') {
    const f = await floor();
    process.stdout.write(`\n${table(f.rows, f.base)}\n${cloneStepTable()}\nper-request VM life CPU ${f.cpuPerRequestVm.toFixed(1)} ms; under load ${f.load.perSecond.toFixed(0)} calls/s, ${f.load.cpuPerCall.toFixed(2)} CPU-ms/call, idle ${f.load.idleCpuPerVmSecond.toFixed(1)} ms/s per VM\n`);
    return;
  }
  const p = await startPlatform({ workers: 1 });
  const http = await startBaselineServer('http', { trivial: TRIVIAL_HANDLER });
  const watchdog = await startBaselineServer('watchdog', { trivial: TRIVIAL_HANDLER });
  await p.waitForWorkers(['w1'], 1);
  const warmUrl = await deploy(p, 'bd-warm', TRIVIAL_HANDLER, 'per-function');
  const reqUrl = await deploy(p, 'bd-req', TRIVIAL_HANDLER, 'per-request');
  const httpUrl = `${http.url}/function/trivial`;
  const spawnUrl = `${watchdog.url}/function/trivial`;

  progress('warm-up');
  for (let i = 0; i < 5; i++) {
    await traced(warmUrl, 'warmup');
    await traced(reqUrl, 'warmup');
    await sleep(PAUSE_MS);
    await fetch(httpUrl, { method: 'POST', body: 'x' }).then((r) => r.text());
    await fetch(spawnUrl, { method: 'POST', body: 'x' }).then((r) => r.text());
  }

  progress(`sequential traced calls: ${CALLS} each, ${PAUSE_MS} ms apart`);
  const warm: Traced[] = [];
  const req: Traced[] = [];
  const hHttp = row('host: in-process node http server (baseline)');
  const hSpawn = row('host: node spawned per request (baseline)');
  const vWarm = row('Mayfly per-function warm, sequential');
  const vReq = row('Mayfly per-request (default deploy), sequential');
  const timed = async (url: string) => {
    const t = performance.now();
    await fetch(url, { method: 'POST', body: 'x' }).then((r) => r.text());
    return performance.now() - t;
  };
  for (let i = 0; i < CALLS; i++) {
    const w = await traced(warmUrl, `w${i}`);
    warm.push(w);
    vWarm.samples.push(w.ms);
    hHttp.samples.push(await timed(httpUrl));
    await sleep(PAUSE_MS);
    const r = await traced(reqUrl, `r${i}`);
    req.push(r);
    vReq.samples.push(r.ms);
    hSpawn.samples.push(await timed(spawnUrl));
    await sleep(PAUSE_MS);
  }

  const startKinds = (xs: Traced[]) => {
    const m = new Map<string, number>();
    for (const x of xs) m.set(x.start ?? '?', (m.get(x.start ?? '?') ?? 0) + 1);
    return [...m].map(([k, v]) => `${k} ${v}`).join(', ');
  };
  const stepRows = (xs: Traced[]) =>
    stepTable(xs).map(([name, ms, n]) => [name, STEP_MEANING[name] ?? '', ms, n] as Array<string | number>);
  process.stdout.write(`\n${table([vWarm], hHttp)}\n${table([vReq], hSpawn)}\n`);
  process.stdout.write(`\nper-function warm call, wall time by step (medians; start kinds: ${startKinds(warm)})\n`);
  process.stdout.write(`${grid(['step', 'what', 'median ms', 'n'], stepRows(warm))}\n`);
  process.stdout.write(`\nper-request call, wall time by step (medians; start kinds: ${startKinds(req)})\n`);
  process.stdout.write(`${grid(['step', 'what', 'median ms', 'n'], stepRows(req))}\n`);

  progress(`CPU under load: warm ${CLIENTS_WARM} clients, per-request ${CLIENTS_REQ} clients, ${LOAD_S} s each`);
  const lw = await cpuUnderLoad(p, warmUrl, CLIENTS_WARM);
  await sleep(1000);
  const lr = await cpuUnderLoad(p, reqUrl, CLIENTS_REQ);
  const names = Object.keys(lw.perCall);
  const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
  process.stdout.write(
    `\nCPU ms per call under load, by process\n${grid(
      ['process', `warm (${CLIENTS_WARM} clients)`, `per-request (${CLIENTS_REQ} clients)`],
      [...names.map((n) => [n, lw.perCall[n]!, lr.perCall[n]!]), ['all', sum(lw.perCall), sum(lr.perCall)]],
    )}\n`,
  );
  process.stdout.write(
    `${grid(
      ['load', 'calls/s', 'p50 ms', 'p99 ms', 'errors'],
      [
        [`warm, ${CLIENTS_WARM} clients`, lw.perSecond, percentile(lw.lat, 50), percentile(lw.lat, 99), lw.errors],
        [`per-request, ${CLIENTS_REQ} clients`, lr.perSecond, percentile(lr.lat, 50), percentile(lr.lat, 99), lr.errors],
      ],
    )}\n`,
  );
  await p.stop();
  await http.stop();
  await watchdog.stop();

  progress('floor: the handler on a guest with no platform around it');
  const f = await floor();
  process.stdout.write(`\n${table(f.rows, f.base)}\n`);
  process.stdout.write(`floor: CPU of one per-request VM's whole life (clone, resume, pause, cont, call, destroy): ${f.cpuPerRequestVm.toFixed(1)} ms\n`);
  process.stdout.write(`${cloneStepTable()}\n`);
  process.stdout.write(
    `floor under load: ${CLIENTS_WARM} running VMs, one caller each, back to back on the guest channel: ${f.load.perSecond.toFixed(0)} calls/s, ` +
      `QEMU CPU ${f.load.cpuPerCall.toFixed(2)} ms per call; an idle running VM costs ${f.load.idleCpuPerVmSecond.toFixed(1)} CPU-ms per second\n`,
  );

  const med = (r: Row) => percentile(r.samples, 50);
  verdict(
    'breakdown',
    `warm p50 ${med(vWarm).toFixed(2)} ms = ${(med(vWarm) / med(hHttp)).toFixed(2)}x node http (floor: call on a running VM ${med(f.rows[0]!).toFixed(2)} ms, with cont/stop ${med(f.rows[1]!).toFixed(2)} ms); ` +
      `per-request p50 ${med(vReq).toFixed(1)} ms = ${(med(vReq) / med(hSpawn)).toFixed(2)}x node spawn (floor ${med(f.rows[2]!).toFixed(1)} ms); ` +
      `CPU/call warm ${sum(lw.perCall).toFixed(1)} ms at ${lw.perSecond.toFixed(0)}/s (floor ${f.load.perSecond.toFixed(0)}/s at ${f.load.cpuPerCall.toFixed(1)} ms), per-request ${sum(lr.perCall).toFixed(0)} ms at ${lr.perSecond.toFixed(1)}/s`,
  );
});
