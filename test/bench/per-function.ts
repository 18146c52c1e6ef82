/**
 * `npm run bench:per-function`: warm calls of `isolation: per-function`
 * functions end to end (gateway → NATS → scheduler → worker → unpause the
 * function's paused VM → call → pause), against the same handlers served by
 * a plain Node `http` server on the host, interleaved in the same run.
 *
 * Two handlers separate the two costs:
 *   trivial   returns a constant-ish value: the hop overhead (HTTP, NATS,
 *             scheduler, worker, QMP cont/stop, virtio-console)
 *   cpu       a pure-JS loop (BENCH_CPU_ITERS iterations): the emulated-CPU
 *             part (TCG here), isolated as (cpu - trivial) on each side
 *
 * Target (issue 13): warm call <= 3 x the host server (issue 4: 8 x).
 * BENCH_CALLS (40), BENCH_CPU_ITERS (5000000).
 */
import {
  callOk,
  countBy,
  CPU_HANDLER,
  deploy,
  envInt,
  progress,
  runBench,
  startBaselineServer,
  startPlatform,
  TRIVIAL_HANDLER,
  verdict,
  workerCalls,
  type CallResult,
  sleep,
} from './common.js';
import { grid, percentile, row, table } from './stats.js';

const CALLS = envInt('BENCH_CALLS', 40);
const ITERS = envInt('BENCH_CPU_ITERS', 5_000_000);
// Issue 13: a warm call <= 3x the in-process server (issue 4 had 8x).
const TARGET = 3;

await runBench('per-function', async () => {
  const p = await startPlatform({ workers: 1 });
  const base = await startBaselineServer('http', { trivial: TRIVIAL_HANDLER, cpu: CPU_HANDLER });
  progress('platform up; waiting for the worker');
  await p.waitForWorkers(['w1'], 0);
  const mTrivial = await deploy(p, 'pf-trivial', TRIVIAL_HANDLER, 'per-function');
  const mCpu = await deploy(p, 'pf-cpu', CPU_HANDLER, 'per-function');
  const bTrivial = `${base.url}/function/trivial`;
  const bCpu = `${base.url}/function/cpu`;
  const body = String(ITERS);

  // Warm-up: the first call of each makes its VM (pool or clone); a few more let TCG and V8 settle.
  for (let i = 0; i < 5; i++) {
    await callOk(mTrivial, 'warmup');
    await callOk(mCpu, body);
    await callOk(bTrivial, 'warmup');
    await callOk(bCpu, body);
  }

  const hTrivial = row('host http server: trivial (baseline)');
  const hCpu = row('host http server: cpu loop');
  const vTrivial = row('Mayfly per-function warm: trivial');
  const vTrivialGw = row('  of which gateway-measured (X-Duration)');
  const vTrivialStart = row('  of which worker: unpause (QMP cont)');
  const vCpu = row('Mayfly per-function warm: cpu loop');
  const results: CallResult[] = [];
  for (let i = 0; i < CALLS; i++) {
    let r = await callOk(mTrivial, `t${i}`);
    results.push(r);
    vTrivial.samples.push(r.ms);
    if (r.gatewayMs !== null) vTrivialGw.samples.push(r.gatewayMs);
    hTrivial.samples.push((await callOk(bTrivial, `t${i}`)).ms);
    r = await callOk(mCpu, body);
    results.push(r);
    vCpu.samples.push(r.ms);
    hCpu.samples.push((await callOk(bCpu, body)).ms);
    if ((i + 1) % 10 === 0) progress(`round ${i + 1}/${CALLS}`);
  }
  await sleep(500);
  const wc = workerCalls(p);
  for (const r of results.filter((_, i) => i % 2 === 0)) {
    const w = r.callId ? wc.get(r.callId) : undefined;
    if (w) vTrivialStart.samples.push(w.startMs);
  }

  const med = (r: { samples: number[] }) => percentile(r.samples, 50);
  process.stdout.write(`\n${table([vTrivial, vTrivialGw, vTrivialStart], hTrivial)}\n`);
  process.stdout.write(`\n${table([vCpu], hCpu)}\n`);
  const hopMs = med(vTrivial) - med(hTrivial);
  const cpuHost = med(hCpu) - med(hTrivial);
  const cpuVm = med(vCpu) - med(vTrivial);
  process.stdout.write(
    `\n${grid(
      ['split of the warm call (medians)', 'host ms', 'Mayfly ms', 'Mayfly - host ms', 'x host'],
      [
        ['hop overhead (trivial handler)', med(hTrivial), med(vTrivial), hopMs, med(vTrivial) / med(hTrivial)],
        [`handler CPU (${ITERS} iterations: cpu - trivial)`, cpuHost, cpuVm, cpuVm - cpuHost, cpuVm / cpuHost],
        ['whole cpu-loop call', med(hCpu), med(vCpu), med(vCpu) - med(hCpu), med(vCpu) / med(hCpu)],
      ],
    )}\n`,
  );
  process.stdout.write(`VM start kinds (after warm-up): ${countBy(results, (r) => r.start ?? '?')}\n`);

  const rTrivial = med(vTrivial) / med(hTrivial);
  const rCpu = med(vCpu) / med(hCpu);
  const ok = (x: number) => (x <= TARGET ? 'MET' : 'NOT MET');
  verdict(
    'per-function',
    `warm call p50 trivial ${med(vTrivial).toFixed(2)} ms = ${rTrivial.toFixed(2)}x host (${ok(rTrivial)}), ` +
      `cpu-loop ${med(vCpu).toFixed(1)} ms = ${rCpu.toFixed(2)}x host (${ok(rCpu)}); target <= ${TARGET}x; ` +
      `hop overhead +${hopMs.toFixed(2)} ms, emulated CPU ${(cpuVm / cpuHost).toFixed(2)}x`,
  );
});
