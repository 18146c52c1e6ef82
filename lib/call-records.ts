/**
 * Call records (OpenWhisk activations) in a JetStream KV bucket, key = call id.
 * Records expire with the bucket's max age (nats-server 2.9 has no per-key
 * TTL). Every transition is a compare-and-set on the key's revision, so a call
 * gets exactly one final record even when two schedulers race on it (a
 * redelivered message): whoever loses the race sees the final record and stops.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import {
  callRecordSchema,
  type AsyncCall,
  FINAL_STATUSES,
  STORES,
  type CallRecord,
  type CallStatus,
} from '../contracts/bus.js';
import { kvKeys } from './kv-keys.js';
import { kvReplicas } from './js-replicas.js';

/** Lines and characters of function logs kept in a record. */
export const RECORD_LOG_LINES = 100;
const RECORD_LOG_CHARS = 16 * 1024;

export function boundedLogs(logs: CallRecord['logs']): CallRecord['logs'] {
  const tail = logs.slice(-RECORD_LOG_LINES);
  let total = 0;
  const out: CallRecord['logs'] = [];
  for (let i = tail.length - 1; i >= 0; i--) {
    total += tail[i]!.line.length;
    if (total > RECORD_LOG_CHARS) break;
    out.unshift(tail[i]!);
  }
  return out;
}

export class CallRecords {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
  ) {}

  static async open(nc: NatsConnection, ttlMs: number): Promise<CallRecords> {
    const kv = await new Kvm(nc).create(STORES.calls, { history: 1, ttl: ttlMs, ...kvReplicas(nc) });
    return new CallRecords(nc, kv);
  }

  async get(callId: string): Promise<CallRecord | null> {
    return (await this.getWithRevision(callId))?.record ?? null;
  }

  async getWithRevision(callId: string): Promise<{ record: CallRecord; revision: number } | null> {
    const e = await this.kv.get(callId);
    if (!e || e.operation !== 'PUT') return null;
    return { record: callRecordSchema.parse(e.json()), revision: e.revision };
  }

  /** Creates the record; false when one exists already (the call id was used before). */
  async create(record: CallRecord): Promise<boolean> {
    try {
      await this.kv.create(record.callId, JSON.stringify(record));
      return true;
    } catch {
      if (await this.get(record.callId)) return false;
      throw new Error(`could not write the record of call ${record.callId}`);
    }
  }

  /** Writes a record without a prior state (sync calls are recorded once, when done). */
  async put(record: CallRecord): Promise<void> {
    await this.kv.put(record.callId, JSON.stringify({ ...record, logs: boundedLogs(record.logs) }));
  }

  /**
   * Applies `change` to the current record with compare-and-set, retrying on
   * concurrent writes. `change` returns null to leave the record as it is.
   * Resolves with the record written, or null when nothing was written.
   */
  async update(callId: string, change: (r: CallRecord) => CallRecord | null): Promise<CallRecord | null> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const cur = await this.getWithRevision(callId);
      if (!cur) return null;
      const next = change(cur.record);
      if (!next) return null;
      try {
        await this.kv.update(callId, JSON.stringify({ ...next, logs: boundedLogs(next.logs) }), cur.revision);
        return next;
      } catch {
        // someone else wrote in between: read again
      }
    }
    throw new Error(`too many concurrent updates of call ${callId}`);
  }

  /** Forgets a call (its submission failed, so the id may be used again). */
  async remove(callId: string): Promise<void> {
    await this.kv.delete(callId);
  }

  /** Cancels a queued call. Returns the record after the attempt. */
  async cancel(callId: string): Promise<{ cancelled: boolean; record: CallRecord | null }> {
    const written = await this.update(callId, (r) =>
      r.status === 'queued' ? { ...r, status: 'cancelled', endedAt: new Date().toISOString() } : null,
    );
    return written ? { cancelled: true, record: written } : { cancelled: false, record: await this.get(callId) };
  }

  /** Newest first, filtered, at most `limit`. Scans the bucket: fine for the bounded retention of records. */
  async list(filter: { function?: string; status?: CallStatus; limit: number }): Promise<CallRecord[]> {
    const out: CallRecord[] = [];
    for (const key of await kvKeys(this.nc, STORES.calls)) {
      const r = await this.get(key).catch(() => null);
      if (!r) continue;
      if (filter.function && r.function !== filter.function) continue;
      if (filter.status && r.status !== filter.status) continue;
      out.push(r);
    }
    out.sort((a, b) => (a.queuedAt < b.queuedAt ? 1 : -1));
    return out.slice(0, filter.limit);
  }
}

export function isFinal(status: CallStatus): boolean {
  return FINAL_STATUSES.has(status);
}

/** The record of an async call just accepted. */
export function newRecord(call: AsyncCall): CallRecord {
  return {
    callId: call.callId,
    function: call.functionName,
    mode: 'async',
    status: 'queued',
    attempts: 0,
    logs: [],
    queuedAt: new Date(call.submittedAt).toISOString(),
    ...(call.callbackUrl ? { callbackUrl: call.callbackUrl } : {}),
    ...(call.trigger ? { trigger: call.trigger } : {}),
  };
}
