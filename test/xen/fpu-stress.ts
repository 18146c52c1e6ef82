/**
 * A diagnostic for the nested Xen host (run in dom0 by dom0-controller.ts when
 * MAYFLY_XEN_STRESS_S is set): does the CPU's floating-point / SIMD register
 * state survive context switches there? Each thread (main + worker_threads)
 * repeats a fixed double-precision computation (V8 compiles it to SSE/AVX code)
 * and a large Buffer copy (glibc's vectorised memcpy), compares every result
 * bit for bit with the first one, and yields through setImmediate and timers
 * between rounds. On a sane machine every mismatch count is 0.
 * Usage: node fpu-stress.js SECONDS THREADS  →  one JSON line on stdout.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createHash } from 'node:crypto';

interface Result {
  rounds: number;
  floatMismatches: number;
  copyMismatches: number;
  firstBad?: string;
}

function compute(seed: number): number {
  let x = seed;
  let acc = 0;
  for (let i = 1; i < 20_000; i++) {
    x = x * 1.000001 + Math.sqrt(i) / (i + 0.5);
    acc += Math.sin(x) * 0.25 - x / (i * 3.0 + 1.0);
  }
  return acc;
}

function bits(d: number): string {
  const f = new Float64Array([d]);
  return new BigUint64Array(f.buffer)[0]!.toString(16);
}

async function run(seconds: number): Promise<Result> {
  const seed = 1.2345;
  const ref = bits(compute(seed));
  const src = Buffer.alloc(4 << 20);
  for (let i = 0; i < src.length; i++) src[i] = (i * 2654435761) >>> 24;
  const refHash = createHash('sha256').update(src).digest('hex');
  const dst = Buffer.alloc(src.length);
  const r: Result = { rounds: 0, floatMismatches: 0, copyMismatches: 0 };
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    const got = bits(compute(seed));
    if (got !== ref) {
      r.floatMismatches++;
      r.firstBad ??= `float ${got} != ${ref}`;
    }
    dst.fill(0);
    src.copy(dst);
    const h = createHash('sha256').update(dst).digest('hex');
    if (h !== refHash) {
      r.copyMismatches++;
      r.firstBad ??= 'buffer copy differs';
    }
    r.rounds++;
    await new Promise<void>((res) => (r.rounds % 2 ? setImmediate(res) : setTimeout(res, 1)));
  }
  return r;
}

if (isMainThread) {
  const seconds = Number(process.argv[2] ?? 30);
  const threads = Number(process.argv[3] ?? 2);
  const workers = Array.from({ length: threads }, () =>
    new Promise<Result>((resolve, reject) => {
      const w = new Worker(new URL(import.meta.url), { workerData: { seconds } });
      w.once('message', (m: Result) => resolve(m));
      w.once('error', reject);
    }),
  );
  const main = await run(seconds);
  const all = [main, ...(await Promise.all(workers))];
  const sum = (k: 'rounds' | 'floatMismatches' | 'copyMismatches') => all.reduce((a, b) => a + b[k], 0);
  console.log(JSON.stringify({ pid: process.pid, threads: all.length, rounds: sum('rounds'), floatMismatches: sum('floatMismatches'), copyMismatches: sum('copyMismatches'), firstBad: all.find((x) => x.firstBad)?.firstBad }));
} else {
  parentPort!.postMessage(await run((workerData as { seconds: number }).seconds));
}
