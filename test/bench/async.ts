/**
 * `npm run bench:async`: async throughput and queue latency under a burst.
 *
 * A burst of BENCH_ASYNC_CALLS (default 1000) async calls of a trivial
 * per-function handler, submitted by 16 concurrent clients, with callbacks to
 * a local receiver. Reports:
 *   accepted/s    202s per second while submitting (the call is in JetStream by then)
 *   completed/s   callbacks per second from the first submit to the last callback
 *   queue latency queuedAt → startedAt of each call (from the call records), median and p99
 *   end to end    submit → callback, median and p99
 * Baseline in the same run: the same handler called synchronously by 16
 * concurrent clients for as many calls (completed/s), so the ratio is the
 * price of the queue against the sync path.
 */
import type { CallRecord } from '../../contracts/bus.js';
import { CallbackReceiver } from '../helpers/callback-receiver.js';
import { callOk, deploy, envInt, onCleanup, progress, runBench, startPlatform, TRIVIAL_HANDLER, verdict } from './common.js';
import { percentile } from './stats.js';

const CALLS = envInt('BENCH_ASYNC_CALLS', 1000);
const CLIENTS = 16;

async function pool<T>(n: number, items: T[], work: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

await runBench('async', async () => {
  const rx = await CallbackReceiver.start();
  onCleanup('callback receiver', () => rx.close());
  const p = await startPlatform({ workers: 1, env: { MAYFLY_POOL_SIZE: '2', MAYFLY_ASYNC_CONCURRENCY: '16' } });
  await p.waitForWorkers(['w1'], 1);
  const syncUrl = await deploy(p, 'burst', TRIVIAL_HANDLER, 'per-function');
  const ids = Array.from({ length: CALLS }, (_, i) => i);

  // Baseline: the same calls, synchronously, 16 clients.
  progress(`sync baseline: ${CALLS} calls, ${CLIENTS} clients`);
  for (let i = 0; i < CLIENTS; i++) await callOk(syncUrl, 'warm-up');
  let t0 = performance.now();
  await pool(CLIENTS, ids, async (i) => {
    await callOk(syncUrl, String(i));
  });
  const syncPerSecond = CALLS / ((performance.now() - t0) / 1000);

  progress(`async burst: ${CALLS} calls, ${CLIENTS} clients`);
  const submitted = new Map<string, number>();
  t0 = performance.now();
  const tSubmit0 = Date.now();
  await pool(CLIENTS, ids, async (i) => {
    const id = `b-${i}`;
    const res = await fetch(`${p.gatewayUrl}/async-function/burst`, {
      method: 'POST',
      headers: { 'x-call-id': id, 'x-callback-url': rx.url, 'content-type': 'text/plain' },
      body: String(i),
    });
    if (res.status !== 202) throw new Error(`async submit answered ${res.status}`);
    await res.arrayBuffer();
    submitted.set(id, Date.now());
  });
  const acceptSeconds = (performance.now() - t0) / 1000;
  await rx.waitFor(() => new Set(rx.received.map((c) => c.headers['x-call-id'])).size >= CALLS, 600_000, 'all callbacks');
  const lastCallback = Math.max(...rx.received.map((c) => c.at));
  const completedPerSecond = CALLS / ((lastCallback - tSubmit0) / 1000);

  const queueMs: number[] = [];
  const e2eMs: number[] = [];
  for (const c of rx.received) {
    const id = String(c.headers['x-call-id']);
    const at = submitted.get(id);
    if (at !== undefined) e2eMs.push(c.at - at);
  }
  await pool(CLIENTS, ids, async (i) => {
    const r = (await (await fetch(`${p.gatewayUrl}/system/invocations/b-${i}`)).json()) as CallRecord;
    if (r.startedAt) queueMs.push(Date.parse(r.startedAt) - Date.parse(r.queuedAt));
  });

  const fmt = (n: number) => n.toFixed(1).padStart(9);
  process.stdout.write(
    [
      `${'measure'.padEnd(36)} ${'value'.padStart(9)}  x baseline`,
      `${'sync calls/s (baseline, 16 clients)'.padEnd(36)} ${fmt(syncPerSecond)}  1.00`,
      `${'async accepted/s'.padEnd(36)} ${fmt(CALLS / acceptSeconds)}  ${(CALLS / acceptSeconds / syncPerSecond).toFixed(2)}`,
      `${'async completed/s'.padEnd(36)} ${fmt(completedPerSecond)}  ${(completedPerSecond / syncPerSecond).toFixed(2)}`,
      `${'queue latency median ms'.padEnd(36)} ${fmt(percentile(queueMs, 50))}`,
      `${'queue latency p99 ms'.padEnd(36)} ${fmt(percentile(queueMs, 99))}`,
      `${'submit → callback median ms'.padEnd(36)} ${fmt(percentile(e2eMs, 50))}`,
      `${'submit → callback p99 ms'.padEnd(36)} ${fmt(percentile(e2eMs, 99))}`,
      `callbacks received: ${rx.received.length} for ${CALLS} calls`,
      '',
    ].join('\n'),
  );
  verdict(
    'async',
    `${CALLS} calls: accepted ${(CALLS / acceptSeconds).toFixed(0)}/s, completed ${completedPerSecond.toFixed(0)}/s ` +
      `(${(completedPerSecond / syncPerSecond).toFixed(2)}x the sync path), queue latency p50 ${percentile(queueMs, 50).toFixed(0)} ms / p99 ${percentile(queueMs, 99).toFixed(0)} ms`,
  );
});
