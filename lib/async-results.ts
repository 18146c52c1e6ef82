/**
 * Results of async call attempts, kept in a JetStream stream (limits retention,
 * file storage, the last message per attempt subject, one hour): the worker
 * publishes an attempt's result to SUBJECTS.asyncResult(callId, attempt) as
 * it would to any reply subject, and JetStream stores it. A scheduler that
 * takes over a call whose previous holder died while waiting (record
 * `running`) first looks here, and waits for the attempt's own deadline,
 * before it starts the function again: a call whose function did run is not
 * run a second time because its scheduler was lost or NATS restarted.
 */
import { DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { invokeResultSchema, STREAMS, SUBJECTS, type InvokeResult } from '../contracts/bus.js';
import { jsonCodec } from './nats.js';
import { jsReplicas } from './js-replicas.js';

const NS_PER_MS = 1_000_000;
/** How long an attempt's result is kept: well beyond MAYFLY_MAX_TIMEOUT_MS + overheads. */
export const RESULT_MAX_AGE_MS = 3600 * 1000;
/** Disk the stored results may take; the oldest go first. */
export const RESULT_MAX_BYTES = 1024 * 1024 * 1024;

export class AsyncResults {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(nc: NatsConnection): Promise<AsyncResults> {
    const jsm = await jetstreamManager(nc);
    try {
      await jsm.streams.info(STREAMS.asyncResults);
    } catch {
      await jsm.streams.add({
        name: STREAMS.asyncResults,
        subjects: [SUBJECTS.asyncResults],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        max_msgs_per_subject: 1,
        max_age: RESULT_MAX_AGE_MS * NS_PER_MS,
        max_bytes: RESULT_MAX_BYTES,
        discard: DiscardPolicy.Old,
        num_replicas: jsReplicas(nc),
      });
    }
    return new AsyncResults(nc, jsm);
  }

  /** The reply subject of one attempt. */
  subject(callId: string, attempt: number): string {
    return SUBJECTS.asyncResult(callId, attempt);
  }

  /** The stored result of an attempt, or null. */
  async stored(callId: string, attempt: number): Promise<InvokeResult | null> {
    const m = await this.jsm.streams.getMessage(STREAMS.asyncResults, { last_by_subj: this.subject(callId, attempt) }).catch(() => null);
    if (!m) return null;
    const parsed = invokeResultSchema.safeParse(jsonCodec.decode(m.data));
    return parsed.success ? parsed.data : null;
  }

  /**
   * The result of an attempt: stored already, or arriving before `untilMs` (ms since epoch), or before
   * `giveUp` settles (the attempt's host was lost); null otherwise.
   */
  async await(callId: string, attempt: number, untilMs: number, giveUp?: Promise<unknown>): Promise<InvokeResult | null> {
    const sub = this.nc.subscribe(this.subject(callId, attempt), { max: 1 });
    let timer: NodeJS.Timeout | undefined;
    try {
      const stored = await this.stored(callId, attempt);
      if (stored) return stored;
      const live = (async () => {
        for await (const m of sub) {
          const parsed = invokeResultSchema.safeParse(jsonCodec.decode(m.data));
          if (parsed.success) return parsed.data;
        }
        return null;
      })();
      const timedOut = new Promise<null>((r) => (timer = setTimeout(() => r(null), Math.max(0, untilMs - Date.now()))));
      const stop = giveUp ? giveUp.then(() => null) : timedOut;
      return (await Promise.race([live, timedOut, stop])) ?? (await this.stored(callId, attempt));
    } finally {
      clearTimeout(timer);
      sub.unsubscribe();
    }
  }
}
