/**
 * VM start counters of one worker, read from its /metrics (the address it
 * announces in its heartbeats): for each start kind (mayfly_vm_start_seconds by
 * `kind`) and for pool refills (VMs booted ahead, mayfly_pool_refill_seconds),
 * how many so far and their total seconds. Rates and mean latencies come from
 * the difference of two readings. Bounded: 1 s, 4 MiB, http(s) only.
 */
import { WORKER_METRICS } from '../contracts/metrics.js';

export interface StartCounter {
  count: number;
  sumSeconds: number;
}
/** Key: the start kind (`cold`, `pool`, `clone`, `snapshot`, `warm`, ...) or `refill`. */
export type StartCounters = Record<string, StartCounter>;

const START = WORKER_METRICS.vmStartSeconds.name;
const REFILL = WORKER_METRICS.poolRefillSeconds.name;
const MAX_BYTES = 4 * 1024 * 1024;

/** Sums the `_count` and `_sum` series of the two histograms, by kind (summed over hosts and runtimes). */
export function parseStartCounters(text: string): StartCounters {
  const out: StartCounters = {};
  const line = /^([a-z_]+)_(count|sum)(?:\{([^}]*)\})?\s+(\S+)/;
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (!m || (m[1] !== START && m[1] !== REFILL)) continue;
    const value = Number(m[4]);
    if (!Number.isFinite(value)) continue;
    const key = m[1] === REFILL ? 'refill' : (/(?:^|,)kind="([^"]*)"/.exec(m[3] ?? '')?.[1] ?? 'unknown');
    const c = (out[key] ??= { count: 0, sumSeconds: 0 });
    if (m[2] === 'count') c.count += value;
    else c.sumSeconds += value;
  }
  return out;
}

export async function scrapeStartCounters(url: string, timeoutMs = 1000): Promise<StartCounters> {
  const u = new URL(url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`not an http(s) metrics address: ${u.protocol}`);
  const res = await fetch(u, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
  if (!res.ok) throw new Error(`worker metrics answered HTTP ${res.status}`);
  if (Number(res.headers.get('content-length') ?? 0) > MAX_BYTES) throw new Error('worker metrics too large');
  const text = await res.text();
  if (text.length > MAX_BYTES) throw new Error('worker metrics too large');
  return parseStartCounters(text);
}
