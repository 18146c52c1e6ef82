/**
 * Per-call timing trace across processes (asked for with the request header
 * `X-Mayfly-Trace: 1`, answered in the standard `Server-Timing` header): every
 * hop stamps the moment it reached a step, in ms since the epoch at sub-ms
 * resolution (performance.timeOrigin + performance.now(), one clock on one
 * host; across hosts it is only as good as their clock sync). Off by default:
 * an untraced call carries nothing and costs nothing.
 */
import type { Trace } from '../contracts/bus.js';

export const TRACE_HEADER = 'x-mayfly-trace';

export function traceNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Appends a stamp when the call is traced (bounded by the schema's length limit). */
export function stamp(trace: Trace | undefined, step: string, at = traceNow()): void {
  if (trace && trace.length < 32) trace.push([step, Math.round(at * 1000) / 1000]);
}

/**
 * `Server-Timing` value: one metric per stamp after the first, its duration the
 * time since the previous stamp (so `sched-recv;dur=0.4` is the bus hop from the
 * gateway to the scheduler), and `total` from the first stamp to the last.
 */
export function serverTiming(trace: Trace): string {
  const parts: string[] = [];
  for (let i = 1; i < trace.length; i++) {
    parts.push(`${trace[i]![0]};dur=${(trace[i]![1] - trace[i - 1]![1]).toFixed(3)}`);
  }
  if (trace.length > 1) parts.push(`total;dur=${(trace[trace.length - 1]![1] - trace[0]![1]).toFixed(3)}`);
  return parts.join(', ');
}

/** Parses a `Server-Timing` value back into [name, ms] pairs (benchmarks, tests). */
export function parseServerTiming(value: string): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (const part of value.split(',')) {
    const m = /^\s*([A-Za-z0-9_.-]+);dur=([0-9.]+)\s*$/.exec(part);
    if (m) out.push([m[1]!, Number(m[2])]);
  }
  return out;
}
