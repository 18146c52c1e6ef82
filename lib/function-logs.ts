/**
 * Function logs for `GET /system/logs?name=&tail=&since=` (OpenFaaS's logs
 * API): the lines a function's VMs wrote (guest `log` frames), as NDJSON, one
 * OpenFaaS log message per line:
 *   {"name":"hello","instance":"w1","timestamp":"2024-…Z","text":"called with x","callId":"…","stream":"stdout"}
 *
 * Source: the call records (lib/call-records.ts), which keep the last
 * RECORD_LOG_LINES lines / 16 KiB of every call, sync and async, for
 * MAYFLY_RECORD_TTL_MS (24 h by default). That is the retention of logs too; no
 * second copy is kept. `instance` is the worker host that ran the call. The
 * guest protocol does not stamp lines, so every line of a call carries the
 * time its call ended. Reading scans at most the newest MAX_SCANNED_RECORDS
 * record writes of the bucket's stream (one ordered consumer, no per-key
 * lookups), so a request costs the same however old the bucket is.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { callRecordSchema, STORES, type CallRecord } from '../contracts/bus.js';
import { FUNCTION_NAME_PATTERN } from '../contracts/functions.js';

export interface FunctionLogEntry {
  name: string;
  instance: string;
  timestamp: string;
  text: string;
  callId: string;
  stream: 'stdout' | 'stderr';
}

export interface LogsQuery {
  name: string;
  /** Only lines at or after this time. */
  since?: Date;
  /** The last `tail` lines; -1 = all (up to MAX_LOG_LINES). */
  tail: number;
}

/** Most lines one response carries. */
export const MAX_LOG_LINES = 10_000;
/** Most record writes one request reads. */
export const MAX_SCANNED_RECORDS = 10_000;

/** The log lines of one call record, stamped with the time the call ended. */
export function recordLogEntries(record: CallRecord): FunctionLogEntry[] {
  const timestamp = record.endedAt ?? record.startedAt ?? record.queuedAt;
  return record.logs.map((l) => ({
    name: record.function,
    instance: record.hostId ?? 'unknown',
    timestamp,
    text: l.line,
    callId: record.callId,
    stream: l.stream,
  }));
}

/** Oldest first (stable within a call), filtered by `since`, the last `tail` of them. */
export function selectLogEntries(entries: FunctionLogEntry[], query: Pick<LogsQuery, 'since' | 'tail'>): FunctionLogEntry[] {
  const since = query.since?.getTime();
  const kept = entries
    .map((e, i) => ({ e, i, t: Date.parse(e.timestamp) }))
    .filter((x) => since === undefined || x.t >= since)
    .sort((a, b) => a.t - b.t || a.i - b.i)
    .map((x) => x.e);
  const n = query.tail < 0 ? MAX_LOG_LINES : Math.min(query.tail, MAX_LOG_LINES);
  return n === 0 ? [] : kept.slice(-n);
}

export function toNdjson(entries: FunctionLogEntry[]): string {
  return entries.map((e) => `${JSON.stringify(e)}\n`).join('');
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `since`: an RFC 3339 time (what faas-cli sends) or a duration back from now ("10m", "2h"). Null if neither. */
export function parseSince(raw: string, now = Date.now()): Date | null {
  const d = DURATION.exec(raw.trim());
  if (d) return new Date(now - Number(d[1]) * UNIT_MS[d[2]!]!);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(raw)) return null;
  const t = Date.parse(raw);
  return Number.isNaN(t) ? null : new Date(t);
}

export type ParsedLogsQuery = { ok: true; query: LogsQuery } | { ok: false; field: string; message: string };

/** Validates `name`, `tail` and `since` of GET /system/logs (`follow` is accepted and ignored). */
export function parseLogsQuery(q: Record<string, unknown>, now = Date.now()): ParsedLogsQuery {
  const name = typeof q.name === 'string' ? q.name : '';
  if (!FUNCTION_NAME_PATTERN.test(name)) {
    return { ok: false, field: 'name', message: 'name (the function) is required: 1 to 63 characters of a-z, 0-9 and "-"' };
  }
  let tail = -1;
  if (q.tail !== undefined && q.tail !== '') {
    tail = Number(q.tail);
    if (!Number.isInteger(tail) || tail < -1) return { ok: false, field: 'tail', message: 'tail must be an integer: a number of lines, or -1 for all' };
  }
  const query: LogsQuery = { name, tail };
  if (q.since !== undefined && q.since !== '') {
    const since = typeof q.since === 'string' ? parseSince(q.since, now) : null;
    if (!since) return { ok: false, field: 'since', message: 'since must be an RFC 3339 time (2024-05-01T10:00:00Z) or a duration (30s, 10m, 2h)' };
    query.since = since;
  }
  return { ok: true, query };
}

/** The log entries of a function from records already at hand (newest or oldest first, any order). */
export function logsFromRecords(records: CallRecord[], query: LogsQuery): FunctionLogEntry[] {
  return selectLogEntries(
    records.filter((r) => r.function === query.name).flatMap(recordLogEntries),
    query,
  );
}

/**
 * Reads the function's logs from the call records' KV stream (`KV_<bucket>`):
 * the newest `maxScan` record writes, in one pass.
 */
export async function readFunctionLogs(nc: NatsConnection, query: LogsQuery, maxScan = MAX_SCANNED_RECORDS): Promise<FunctionLogEntry[]> {
  const streamName = `KV_${STORES.calls}`;
  const jsm = await jetstreamManager(nc);
  const { state } = await jsm.streams.info(streamName);
  if (state.messages === 0 || state.last_seq === 0) return [];
  const start = Math.max(state.first_seq, state.last_seq - maxScan + 1);
  const consumer = await jetstream(nc).consumers.get(streamName, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: start,
  });
  const entries: FunctionLogEntry[] = [];
  const since = query.since?.getTime();
  try {
    let scanned = 0;
    for (let done = false; !done && scanned < maxScan; ) {
      const batch = await consumer.fetch({ max_messages: Math.min(1000, maxScan - scanned), expires: 2000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        scanned++;
        if (m.data.length > 0) {
          const parsed = callRecordSchema.safeParse(safeJson(m.data));
          if (parsed.success && parsed.data.function === query.name && parsed.data.logs.length > 0) {
            for (const e of recordLogEntries(parsed.data)) if (since === undefined || Date.parse(e.timestamp) >= since) entries.push(e);
          }
        }
        if (m.info.pending === 0 || m.seq >= state.last_seq) {
          done = true;
          break;
        }
      }
      if (got === 0) done = true;
      await batch.close().catch(() => undefined);
    }
  } finally {
    await consumer.delete().catch(() => false);
  }
  return selectLogEntries(entries, query);
}

function safeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return null;
  }
}
