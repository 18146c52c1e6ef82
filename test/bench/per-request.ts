/**
 * `npm run bench:per-request`: end-to-end HTTP latency of an `isolation:
 * per-request` function deployed with no annotations (a fresh VM per call:
 * a ready clone of the function's snapshot, one bus hop from the gateway to
 * the worker that holds it), against the host baseline of
 * one `node` process per request (OpenFaaS classic watchdog's fork/exec: a
 * small HTTP server spawns `node baseline-runner.js handler.mjs` per call,
 * event on stdin, value on stdout), with the same handler, in the same run.
 *
 *   sequential     one call at a time, waiting until the worker has made
 *                  its VMs ready again (heartbeat: nothing booting) plus
 *                  BENCH_PAUSE_MS: the latency a user sees when the platform keeps up
 *   back-to-back   the next call as soon as the previous answered
 *
 *   no snapshot    the same function deployed with com.mayfly.snapshot: "false":
 *                  a pooled clone of the runtime template that loads the
 *                  function on the call path (placed by the scheduler)
 *
 * Target (issue 13): Mayfly sequential p50 < 0.5 x spawn p50.
 * BENCH_CALLS (30), BENCH_PAUSE_MS (200), BENCH_POOL_SIZE (1).
 */
import os from 'node:os';
import path from 'node:path';
import {
  callOk,
  countBy,
  cpuSeconds,
  deploy,
  envInt,
  progress,
  runBench,
  sleep,
  spawnHandlerMs,
  startBaselineServer,
  startPlatform,
  TRIVIAL_HANDLER,
  verdict,
  waitPoolFull,
  workerCalls,
  type CallResult,
} from './common.js';
import { percentile, row, table } from './stats.js';

const CALLS = envInt('BENCH_CALLS', 30);
const PAUSE_MS = envInt('BENCH_PAUSE_MS', 200);
const POOL = envInt('BENCH_POOL_SIZE', 1);
const TARGET = 0.5;

await runBench('per-request', async () => {
  const p = await startPlatform({ workers: 1, env: { MAYFLY_POOL_SIZE: String(POOL) } });
  const base = await startBaselineServer('watchdog', { trivial: TRIVIAL_HANDLER });
  progress('platform up; waiting for the worker pool');
  await p.waitForWorkers(['w1'], POOL);
  const url = await deploy(p, 'pr-trivial', TRIVIAL_HANDLER, 'per-request');
  const poolUrl = await deploy(p, 'pr-nosnap', TRIVIAL_HANDLER, 'per-request', { 'com.mayfly.snapshot': 'false' });
  const baseUrl = `${base.url}/function/trivial`;
  const handlerFile = path.join(base.dir, 'trivial.mjs');

  // Warm-up: code fetched into the worker's cache, connections open, host JIT warm.
  for (let i = 0; i < 3; i++) {
    await waitPoolFull(p, 'w1', POOL);
    await callOk(poolUrl, 'warmup');
    await callOk(baseUrl, 'warmup');
  }

  // The snapshot is made in the background after the first start: wait until calls come from it.
  for (let i = 0; ; i++) {
    await waitPoolFull(p, 'w1', POOL);
    if ((await callOk(url, 'warmup')).start === 'snapshot') break;
    if (i > 60) throw new Error('pr-trivial was never served from its snapshot');
  }

  const seq = row('Mayfly per-request (default deploy), sequential');
  const snap = row('Mayfly per-request, no snapshot (pool), sequential');
  const snapResults: CallResult[] = [];
  const seqGateway = row('  of which gateway-measured (X-Duration)');
  const seqStart = row('  of which worker: get VM (cont)');
  const spawnSeq = row('host: spawn node per request, via HTTP (baseline)');
  const spawnDirect = row('host: spawn node per request, no HTTP');
  const seqResults: CallResult[] = [];
  // CPU of the platform (services, their reaped QEMUs, nats-server, live QEMUs) and of the watchdog server (with its spawned handlers).
  const platformCpu = () => cpuSeconds([...p.services.map((s) => s.proc.pid!), p.nats.pid]) + cpuSeconds(p.qemuPids(), false);
  const cpuP0 = platformCpu();
  const cpuB0 = cpuSeconds([base.pid]);
  for (let i = 0; i < CALLS; i++) {
    await waitPoolFull(p, 'w1', POOL);
    await sleep(PAUSE_MS);
    const r = await callOk(url, `s${i}`);
    seqResults.push(r);
    seq.samples.push(r.ms);
    if (r.gatewayMs !== null) seqGateway.samples.push(r.gatewayMs);
    spawnSeq.samples.push((await callOk(baseUrl, `s${i}`)).ms);
    await waitPoolFull(p, 'w1', POOL);
    await sleep(PAUSE_MS);
    const rs = await callOk(poolUrl, `s${i}`);
    snapResults.push(rs);
    snap.samples.push(rs.ms);
    spawnDirect.samples.push(await spawnHandlerMs(handlerFile, `s${i}`));
    if ((i + 1) % 10 === 0) progress(`sequential ${i + 1}/${CALLS}`);
  }

  const cpuPerCall = ((platformCpu() - cpuP0) / CALLS) * 1000;
  const cpuPerSpawn = ((cpuSeconds([base.pid]) - cpuB0) / CALLS) * 1000;

  const b2b = row('Mayfly per-request, back-to-back');
  const b2bResults: CallResult[] = [];
  for (let i = 0; i < CALLS; i++) {
    const r = await callOk(url, `b${i}`);
    b2bResults.push(r);
    b2b.samples.push(r.ms);
  }
  const spawnB2b = row('host: spawn node per request, back-to-back');
  for (let i = 0; i < CALLS; i++) spawnB2b.samples.push((await callOk(baseUrl, `b${i}`)).ms);

  // The worker's own timing of each call (its log), joined by call id.
  await sleep(500);
  const wc = workerCalls(p);
  for (const r of seqResults) {
    const w = r.callId ? wc.get(r.callId) : undefined;
    if (w && w.start === 'snapshot') seqStart.samples.push(w.startMs);
  }

  process.stdout.write(`\n${table([spawnDirect, seq, seqGateway, seqStart, snap, b2b, spawnB2b], spawnSeq)}\n`);
  process.stdout.write(
    `VM start kinds: sequential: ${countBy(seqResults, (r) => r.start ?? '?')}; no snapshot: ${countBy(snapResults, (r) => r.start ?? '?')}; back-to-back: ${countBy(b2bResults, (r) => r.start ?? '?')}\n`,
  );
  process.stdout.write(
    `CPU per call (sequential run, both Mayfly functions): Mayfly platform ${cpuPerCall.toFixed(0)} ms (incl. making the next VM), spawn-per-request ${cpuPerSpawn.toFixed(0)} ms = ${(cpuPerCall / cpuPerSpawn).toFixed(1)}x\n`,
  );
  process.stdout.write(`load average after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);

  const ratio = percentile(seq.samples, 50) / percentile(spawnSeq.samples, 50);
  const ratioB2b = percentile(b2b.samples, 50) / percentile(spawnB2b.samples, 50);
  const ratioSnap = percentile(snap.samples, 50) / percentile(spawnSeq.samples, 50);
  verdict(
    'per-request',
    `Mayfly p50 ${percentile(seq.samples, 50).toFixed(1)} ms = ${ratio.toFixed(2)}x spawn p50 ${percentile(spawnSeq.samples, 50).toFixed(1)} ms` +
      ` (target < ${TARGET}x): ${ratio < TARGET ? 'MET' : 'NOT MET'}; without a snapshot ${percentile(snap.samples, 50).toFixed(1)} ms = ${ratioSnap.toFixed(2)}x` +
      `; back-to-back ${ratioB2b.toFixed(2)}x`,
  );
});
