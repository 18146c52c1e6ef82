/**
 * Per-function figures over a recent window, computed from call records
 * (GET /system/invocations): calls, errors, p50/p99 duration, start kinds; and
 * starts per second by kind for the Hosts page. No DOM: unit-tested.
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

/**
 * VM starts per second by start kind on one host (or all when hostId is
 * undefined), in whole-second buckets from `fromSec` to `toSec` inclusive
 * (epoch seconds), by the records' startedAt.
 */
export function startsPerSecond(records: CallRecord[], fromSec: number, toSec: number, hostId?: string): Record<StartKind, number[]> {
  const n = Math.max(0, toSec - fromSec + 1);
  const out = Object.fromEntries(START_KINDS.map((k) => [k, new Array<number>(n).fill(0)])) as Record<StartKind, number[]>;
  for (const r of records) {
    if (!r.start || !r.startedAt || (hostId !== undefined && r.hostId !== hostId)) continue;
    const sec = Math.floor(Date.parse(r.startedAt) / 1000);
    if (sec < fromSec || sec > toSec) continue;
    out[r.start][sec - fromSec]!++;
  }
  return out;
}

/** Median call duration (start to end) of the calls that started in each second (same buckets), undefined where none did. */
export function medianDurationPerSecond(records: CallRecord[], fromSec: number, toSec: number, hostId?: string): Array<number | null> {
  const buckets: number[][] = Array.from({ length: Math.max(0, toSec - fromSec + 1) }, () => []);
  for (const r of records) {
    if (!r.startedAt || (hostId !== undefined && r.hostId !== hostId)) continue;
    const sec = Math.floor(Date.parse(r.startedAt) / 1000);
    const d = durationMs(r);
    if (sec < fromSec || sec > toSec || d === undefined) continue;
    buckets[sec - fromSec]!.push(d);
  }
  return buckets.map((b) => (b.length ? percentile(b.sort((x, y) => x - y), 0.5)! : null));
}
