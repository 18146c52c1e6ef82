/**
 * `npm run bench:throughput`: invocations per second sustained by
 * BENCH_CLIENTS (8) concurrent clients for BENCH_DURATION_S (20) seconds,
 * each client sending its next call as soon as the previous one answered:
 *
 *   Mayfly per-request   (fresh VM per call)   vs host: spawn node per request (watchdog)
 *   Mayfly per-function  (warm VMs)            vs host: plain node http server
 *
 * through the real platform (1 worker), with the same trivial handler. During
 * each Mayfly run the worker's pool is sampled from its heartbeats (ready VMs,
 * refilling), and the refills are read from the worker's own counters on its
 * /metrics (`mayfly_pool_refills_total`, `mayfly_pool_refill_seconds`; inferred
 * from the calls that took a pooled VM when the worker has no metrics).
 * BENCH_POOL_SIZE (1), BENCH_POOL_MAX (8): the worker's MAYFLY_POOL_SIZE/MAX.
 */
import type { TestPlatform } from '../helpers/platform.js';
import {
  call,
  callOk,
  countBy,
  cpuSeconds,
  machineCpu,
  deploy,
  envInt,
  progress,
  runBench,
  sleep,
  startBaselineServer,
  startPlatform,
  TRIVIAL_HANDLER,
  verdict,
  waitPoolFull,
  workerRefills,
  type CallResult,
} from './common.js';
import { grid, mean, percentile } from './stats.js';

const CLIENTS = Math.max(1, envInt('BENCH_CLIENTS', 8));
/** Issue 13 measures per-request throughput with 4 clients, per-function with 8. */
const CLIENTS_REQ = Math.max(1, envInt('BENCH_CLIENTS_REQ', 4));
const DURATION_S = envInt('BENCH_DURATION_S', 20);
const POOL = envInt('BENCH_POOL_SIZE', 1);
const POOL_MAX = envInt('BENCH_POOL_MAX', 8);

interface LoadResult {
  name: string;
  results: CallResult[];
  errors: number;
  seconds: number;
  perSecond: number;
  /** CPU seconds the serving processes (and their children: VMs, spawned handlers) used per successful call. */
  cpuPerCall: number;
  /** Share of the whole machine's CPU that was busy (anyone's), %. */
  machineBusy: number;
  pool?: {
    samples: number[];
    booting: number[];
    /** Refills counted by the worker (mayfly_pool_refills_total), or inferred when its metrics are not available. */
    refills: number;
    counted: boolean;
    refillPerSecond: number;
    /** Mean time to make one pool VM during the run (mayfly_pool_refill_seconds), s. */
    refillSeconds: number;
    start: number;
    end: number;
  };
}

async function load(name: string, url: string, seconds: number, cpu: () => number, p?: TestPlatform, clients = CLIENTS): Promise<LoadResult> {
  const results: CallResult[] = [];
  let errors = 0;
  const firstError: string[] = [];
  const hb = () => p?.hosts().find((h) => h.hostId === 'w1');
  const poolSamples: number[] = [];
  const booting: number[] = [];
  const poolStart = hb()?.pools.node ?? 0;
  const counters0 = p ? await workerRefills(p) : null;
  const sampler = p
    ? setInterval(() => {
        const h = hb();
        if (h) {
          poolSamples.push(h.pools.node ?? 0);
          booting.push(h.vms.booting ?? 0);
        }
      }, 250)
    : null;
  const cpu0 = cpu();
  const m0 = machineCpu();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; performance.now() < end; i++) {
        try {
          const r = await call(url, `c${c}-${i}`);
          if (r.status === 200) results.push(r);
          else {
            errors++;
            if (firstError.length < 3) firstError.push(`${r.status} ${r.body.slice(0, 200)}`);
          }
        } catch (err) {
          errors++;
          if (firstError.length < 3) firstError.push((err as Error).message);
        }
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const cpuUsed = cpu() - cpu0;
  const m1 = machineCpu();
  if (sampler) clearInterval(sampler);
  if (firstError.length) progress(`${name}: errors, e.g. ${firstError.join(' | ')}`);
  const out: LoadResult = {
    name,
    results,
    errors,
    seconds: elapsed,
    perSecond: results.length / elapsed,
    cpuPerCall: cpuUsed / Math.max(1, results.length),
    machineBusy: ((m1.busy - m0.busy) / Math.max(0.001, m1.total - m0.total)) * 100,
  };
  if (p) {
    await sleep(400); // one more heartbeat after the last call
    const poolEnd = hb()?.pools.node ?? 0;
    const counters1 = await workerRefills(p);
    const counted = counters0 !== null && counters1 !== null;
    // Without the worker's counter: every pooled VM a call took was replaced, plus the change of the pool size.
    const refills = counted ? counters1.refills - counters0.refills : results.filter((r) => r.start === 'pool').length + (poolEnd - poolStart);
    const made = counted ? counters1.count - counters0.count : 0;
    const refillSeconds = made > 0 ? (counters1!.seconds - counters0!.seconds) / made : NaN;
    out.pool = { samples: poolSamples, booting, refills, counted, refillPerSecond: refills / elapsed, refillSeconds, start: poolStart, end: poolEnd };
  }
  progress(`${name}: ${out.perSecond.toFixed(2)}/s over ${elapsed.toFixed(1)} s, ${errors} errors`);
  return out;
}

await runBench('throughput', async () => {
  const p = await startPlatform({ workers: 1, env: { MAYFLY_POOL_SIZE: String(POOL), MAYFLY_POOL_MAX: String(POOL_MAX) } });
  const watchdog = await startBaselineServer('watchdog', { trivial: TRIVIAL_HANDLER });
  const server = await startBaselineServer('http', { trivial: TRIVIAL_HANDLER });
  progress('platform up; waiting for the worker pool');
  await p.waitForWorkers(['w1'], POOL);
  const pr = await deploy(p, 'tp-request', TRIVIAL_HANDLER, 'per-request');
  const pf = await deploy(p, 'tp-function', TRIVIAL_HANDLER, 'per-function');
  for (let i = 0; i < 2; i++) {
    await waitPoolFull(p, 'w1', POOL);
    await callOk(pr, 'warmup');
    await callOk(pf, 'warmup');
    await callOk(`${watchdog.url}/function/trivial`, 'warmup');
    await callOk(`${server.url}/function/trivial`, 'warmup');
  }
  // The per-request function's snapshot is made after its first start: load starts once calls come from it.
  for (let i = 0; ; i++) {
    await waitPoolFull(p, 'w1', POOL);
    if ((await callOk(pr, 'warmup')).start === 'snapshot') break;
    if (i > 60) throw new Error('tp-request was never served from its snapshot');
  }

  // CPU of the platform: its services with their reaped children (the worker reaps its QEMUs), nats-server, and live QEMUs.
  const platformCpu = () =>
    cpuSeconds([...p.services.map((s) => s.proc.pid!), p.nats.pid]) + cpuSeconds(p.qemuPids(), false);
  const runs: Array<{ r: LoadResult; base: LoadResult }> = [];
  await waitPoolFull(p, 'w1', POOL);
  const mReq = await load(`Mayfly per-request (${CLIENTS_REQ} clients)`, pr, DURATION_S, platformCpu, p, CLIENTS_REQ);
  const bReq = await load(
    `host: spawn node per request (watchdog, ${CLIENTS_REQ} clients)`,
    `${watchdog.url}/function/trivial`,
    DURATION_S,
    () => cpuSeconds([watchdog.pid]),
    undefined,
    CLIENTS_REQ,
  );
  runs.push({ r: mReq, base: bReq });
  // Sustained per-function load: first let it make its warm VMs (one per concurrent client).
  await waitPoolFull(p, 'w1', POOL, Date.now(), 120_000);
  for (let i = 0; i < 2; i++) await Promise.all(Array.from({ length: CLIENTS }, () => callOk(pf, 'warmup')));
  const mFn = await load(`Mayfly per-function (warm VMs, ${CLIENTS} clients)`, pf, DURATION_S, platformCpu, p);
  const bFn = await load(`host: plain node http server (${CLIENTS} clients)`, `${server.url}/function/trivial`, DURATION_S, () => cpuSeconds([server.pid]));
  runs.push({ r: mFn, base: bFn });

  const lat = (r: LoadResult, q: number) => percentile(r.results.map((x) => x.ms), q);
  const rows: Array<Array<string | number>> = [];
  for (const { r, base } of runs) {
    for (const x of [base, r]) {
      rows.push([
        x.name,
        x.results.length,
        x.errors,
        x.perSecond,
        lat(x, 50),
        lat(x, 99),
        x.perSecond / base.perSecond,
        x.cpuPerCall * 1000,
        x.machineBusy,
      ]);
    }
  }
  process.stdout.write(
    `\nclosed loops of concurrent clients, ${DURATION_S} s each\n${grid(['load', 'calls', 'errors', 'inv/s', 'p50 ms', 'p99 ms', 'x base inv/s', 'CPU ms/call', 'machine busy %'], rows)}\n`,
  );
  for (const { r } of runs) {
    process.stdout.write(`${r.name}: VM start kinds ${countBy(r.results, (x) => x.start ?? '?')}`);
    if (r.pool) {
      process.stdout.write(
        `; pool refills ${r.pool.refills} (${r.pool.counted ? "worker's mayfly_pool_refills_total" : 'inferred'}) = ${r.pool.refillPerSecond.toFixed(2)}/s` +
          `${Number.isFinite(r.pool.refillSeconds) ? `, ${(r.pool.refillSeconds * 1000).toFixed(0)} ms each` : ''}; ready VMs in pool (heartbeats) mean ${mean(r.pool.samples).toFixed(2)}, ` +
          `max ${Math.max(0, ...r.pool.samples)}; refilling: ${((r.pool.booting.filter((b) => b > 0).length / Math.max(1, r.pool.booting.length)) * 100).toFixed(0)}% of samples`,
      );
    }
    process.stdout.write('\n');
  }
  const reqRatio = mReq.perSecond / bReq.perSecond;
  const fnRatio = mFn.perSecond / bFn.perSecond;
  verdict(
    'throughput',
    `per-request ${mReq.perSecond.toFixed(2)} inv/s = ${reqRatio.toFixed(2)}x spawn-per-request with ${CLIENTS_REQ} clients ` +
      `(target >= 0.5x: ${reqRatio >= 0.5 ? 'MET' : 'NOT MET'}); per-function ${mFn.perSecond.toFixed(1)} inv/s = ` +
      `${fnRatio.toFixed(3)}x node http server with ${CLIENTS} clients (targets >= 500/s: ${mFn.perSecond >= 500 ? 'MET' : 'NOT MET'}, ` +
      `>= 0.08x: ${fnRatio >= 0.08 ? 'MET' : 'NOT MET'}); errors ${mReq.errors + mFn.errors}`,
  );
});
