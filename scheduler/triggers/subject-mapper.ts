/**
 * Subject triggers: pulls captured messages from the trigger stream's durable
 * consumer (shared by every scheduler replica) and turns each into one async
 * call per function whose `topic` matches its subject: the call's record
 * (`queued`), then the async work queue with Nats-Msg-Id = call id, then the
 * ack. Each step is idempotent, so a replica that dies half-way leaves a
 * message that the next one maps again without a second call: the record
 * exists (create is compare-and-set) and the queue drops the repeated id.
 *
 * A body above MAYFLY_TRIGGER_MAX_BODY_BYTES gets a `failed` record with the
 * reason instead of a call. A message no function matches any more (its
 * function was removed or moved to other subjects) is acked and counted under
 * trigger="none".
 */
import { jetstreamManager, type Consumer, type JsMsg } from '@nats-io/jetstream';
import type { AsyncCall, CallRecord } from '../../contracts/bus.js';
import type { MayflyConfig } from '../../contracts/config.js';
import { NATS_CALLBACK_PROTOCOL, TRIGGER_HEADERS, TRIGGER_STREAM } from '../../contracts/triggers.js';
import type { AsyncPublisher } from '../../lib/async-queue.js';
import { newRecord, type CallRecords } from '../../lib/call-records.js';
import type { Logger } from '../../lib/logger.js';
import type { NatsConnection } from '../../lib/nats.js';
import { replySubject, replySubjectProblem } from '../../lib/trigger-annotations.js';
import { triggerConsumer } from '../../lib/trigger-stream.js';
import type { SchedulerMetrics } from '../metrics.js';
import { messageCallId, messageEvent, type CapturedMessage } from './event.js';
import { enqueue } from './enqueue.js';
import type { FunctionView } from './function-view.js';

export interface SubjectMapperDeps {
  nc: NatsConnection;
  config: MayflyConfig;
  log: Logger;
  view: FunctionView;
  records: CallRecords;
  publisher: AsyncPublisher;
  metrics?: SchedulerMetrics | undefined;
}

export interface SubjectMapper {
  stop(): Promise<void>;
  /** The consumer's backlog: waiting (num_pending) and being mapped (num_ack_pending). */
  lag(): Promise<{ waiting: number; mapping: number }>;
}

function captured(msg: JsMsg): CapturedMessage {
  const h = msg.headers;
  const headers: [string, string[]][] = h ? h.keys().map((k) => [k, h.values(k)]) : [];
  const msgId = h?.get('Nats-Msg-Id') || undefined;
  return { subject: msg.subject, data: msg.data, headers, seq: msg.seq, ...(msgId !== undefined ? { msgId } : {}) };
}

export async function startSubjectMapper(d: SubjectMapperDeps): Promise<SubjectMapper> {
  const { config, log, view, records, publisher, metrics } = d;
  const consumer: Consumer = await triggerConsumer(d.nc, { ackWaitMs: config.MAYFLY_ASYNC_ACK_WAIT_MS });
  /** Part of every sequence-based call id: a recreated stream starts its sequences again. */
  const streamEpoch = Date.parse((await (await jetstreamManager(d.nc)).streams.info(TRIGGER_STREAM)).created).toString(36);
  let stopped = false;

  async function handle(msg: JsMsg): Promise<void> {
    const m = captured(msg);
    let matches = view.match(m.subject);
    if (matches.length === 0) {
      await view.refresh(true); // deployed a moment ago, before this replica looked?
      matches = view.match(m.subject);
    }
    if (matches.length === 0) {
      metrics?.triggers.messages.inc({ trigger: 'none' });
      log.info({ subject: m.subject, seq: m.seq }, 'no function is triggered by this subject any more; message dropped');
      msg.ack();
      return;
    }
    const submittedAt = Math.floor(msg.info.timestampNanos / 1e6) || Date.now();
    const headerReply = msg.headers?.get(TRIGGER_HEADERS.replySubject, 'insensitive') || undefined;
    for (const { fn, pattern } of matches) {
      const trigger = `subject:${pattern}`;
      metrics?.triggers.messages.inc({ trigger });
      const callId = messageCallId(fn.name, m, streamEpoch);
      let reply = replySubjectOf(fn.annotations);
      if (headerReply !== undefined) {
        const problem = replySubjectProblem(headerReply);
        if (problem) log.warn({ callId, subject: m.subject }, `ignoring the message's ${TRIGGER_HEADERS.replySubject} header: ${problem}`);
        else reply = headerReply;
      }
      if (m.data.length > config.MAYFLY_TRIGGER_MAX_BODY_BYTES) {
        const now = new Date().toISOString();
        const rec: CallRecord = {
          ...newRecord({ callId, functionName: fn.name, event: emptyEvent(), submittedAt, trigger }),
          status: 'failed',
          statusCode: 413,
          error: `message on "${m.subject}" is ${m.data.length} bytes, above the trigger body limit of ${config.MAYFLY_TRIGGER_MAX_BODY_BYTES} bytes (MAYFLY_TRIGGER_MAX_BODY_BYTES); the function was not called`,
          endedAt: now,
        };
        if (await records.create(rec)) metrics?.triggers.rejected.inc({ trigger, function_name: fn.name, reason: 'too_large' });
        continue;
      }
      const call: AsyncCall = {
        callId,
        functionName: fn.name,
        event: messageEvent(m, callId),
        submittedAt,
        trigger,
        ...(reply !== undefined ? { callbackUrl: `${NATS_CALLBACK_PROTOCOL}${reply}` } : {}),
      };
      if (await enqueue(records, publisher, call)) metrics?.triggers.started.inc({ trigger, function_name: fn.name });
    }
    msg.ack();
  }

  function replySubjectOf(annotations: Record<string, string>): string | undefined {
    try {
      return replySubject(annotations);
    } catch {
      return undefined; // checked at deploy
    }
  }

  async function loop(): Promise<void> {
    while (!stopped) {
      let msg: JsMsg | null = null;
      try {
        msg = await consumer.next({ expires: 2000 });
      } catch (err) {
        if (!stopped) log.warn({ err: (err as Error).message }, 'trigger stream unavailable; retrying');
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!msg) continue;
      try {
        await handle(msg);
      } catch (err) {
        // NATS away mid-way: the message comes back (nak, or ack_wait) and is mapped again without duplicates.
        log.warn({ err: (err as Error).message, subject: msg.subject, seq: msg.seq }, 'could not map a trigger message; it will be redelivered');
        try {
          msg.nak(config.MAYFLY_ASYNC_RETRY_MIN_MS);
        } catch {
          // connection gone: ack_wait redelivers it
        }
      }
    }
  }

  const loops = Array.from({ length: config.MAYFLY_TRIGGER_CONCURRENCY }, () => loop());
  return {
    async lag() {
      const info = await consumer.info();
      return { waiting: info.num_pending, mapping: info.num_ack_pending };
    },
    async stop() {
      stopped = true;
      await Promise.allSettled(loops);
    },
  };
}

function emptyEvent(): AsyncCall['event'] {
  return { method: 'POST', path: '/', query: {}, headers: {}, body: '', isBase64Encoded: false };
}
