/**
 * Per-function figures over a recent window, computed from call records
 * (GET /system/invocations): calls, errors, p50/p99 duration, start kinds; and
 * VM start rates and latencies from two readings of a host's counters. No DOM: unit-tested.
 */
import { START_KINDS, type CallRecord, type StartKind } from './types.js';

export interface FunctionStats {
  calls: number;
  errors: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  starts: Record<StartKind, number>;
}

/** Nearest-rank percentile of sorted values (q in 0..1). */
export function percentile(sorted: number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1];
}

export function durationMs(r: CallRecord): number | undefined {
  if (!r.startedAt || !r.endedAt) return undefined;
  const d = Date.parse(r.endedAt) - Date.parse(r.startedAt);
  return Number.isFinite(d) && d >= 0 ? d : undefined;
}

const emptyStarts = (): Record<StartKind, number> => Object.fromEntries(START_KINDS.map((k) => [k, 0])) as Record<StartKind, number>;

/** Stats per function name of the calls queued since `sinceMs` (epoch ms). */
export function statsByFunction(records: CallRecord[], sinceMs: number): Map<string, FunctionStats> {
  const out = new Map<string, FunctionStats & { durations: number[] }>();
  for (const r of records) {
    if (Date.parse(r.queuedAt) < sinceMs) continue;
    let s = out.get(r.function);
    if (!s) out.set(r.function, (s = { calls: 0, errors: 0, p50Ms: undefined, p99Ms: undefined, starts: emptyStarts(), durations: [] }));
    s.calls++;
    if (r.status === 'failed' || r.status === 'dead') s.errors++;
    if (r.start) s.starts[r.start]++;
    const d = durationMs(r);
    if (d !== undefined) s.durations.push(d);
  }
  const result = new Map<string, FunctionStats>();
  for (const [name, { durations, ...s }] of out) {
    durations.sort((a, b) => a - b);
    result.set(name, { ...s, p50Ms: percentile(durations, 0.5), p99Ms: percentile(durations, 0.99) });
  }
  return result;
}

/** One reading of a host's VM start counters (GET /system/hosts `starts`), with the time it was taken. */
export interface StartReading {
  atMs: number;
  starts: Record<string, { count: number; sumSeconds: number }>;
}

/**
 * Between two readings, per series (start kind or `refill`): starts per second
 * and their mean latency in ms (null when none happened). A counter that went
 * down (the worker restarted) counts from zero.
 */
export function startRates(prev: StartReading, cur: StartReading): Record<string, { perSecond: number; meanMs: number | null }> {
  const dt = (cur.atMs - prev.atMs) / 1000;
  const out: Record<string, { perSecond: number; meanMs: number | null }> = {};
  if (dt <= 0) return out;
  for (const [key, c] of Object.entries(cur.starts)) {
    const p = prev.starts[key] ?? { count: 0, sumSeconds: 0 };
    const reset = c.count < p.count;
    const dn = reset ? c.count : c.count - p.count;
    const ds = reset ? c.sumSeconds : c.sumSeconds - p.sumSeconds;
    out[key] = { perSecond: dn / dt, meanMs: dn > 0 ? (ds / dn) * 1000 : null };
  }
  return out;
}
