/**
 * Runs async calls from the JetStream work queue. Every scheduler replica pulls
 * from the same durable consumer, MAYFLY_ASYNC_CONCURRENCY calls at a time.
 *
 * For each message: read the call's record (a final record means a redelivery
 * of a finished call: finish its callback if needed and ack); mark it running;
 * place it like a sync call with this scheduler's inbox as the reply subject,
 * keeping the message alive with working() meanwhile; then decide (retry
 * policy): retry later (nak with delay), or write the one final record
 * (compare-and-set), POST the callback once, and only then ack. A scheduler,
 * worker or VM that dies mid-call leaves the message unacked: it is redelivered
 * and the record's state tells the next scheduler where things stand.
 */
import { headers as natsHeaders } from '@nats-io/transport-node';
import type { JsMsg } from '@nats-io/jetstream';
import {
  asyncCallSchema,
  invokeResultSchema,
  type AsyncCall,
  type CallRecord,
  type InvokeRequest,
  type InvokeResult,
} from '../contracts/bus.js';
import type { MayflyConfig } from '../contracts/config.js';
import { NATS_CALLBACK_PROTOCOL } from '../contracts/triggers.js';
import { asyncConsumer } from '../lib/async-queue.js';
import { AsyncResults } from '../lib/async-results.js';
import { CallRecords, isFinal, newRecord } from '../lib/call-records.js';
import { FunctionStore, functionLimits } from '../lib/function-store.js';
import type { Logger } from '../lib/logger.js';
import { jsonCodec, Reconnects, type NatsConnection } from '../lib/nats.js';
import { mapInvokeResult } from '../lib/response-mapping.js';
import type { HostWatch, LostWatch } from '../lib/host-watch.js';
import type { SchedulerMetrics } from './metrics.js';
import { decide, retryPolicy, type RetryPolicy } from './retry-policy.js';

/** Per-function concurrency of async calls on one scheduler replica, from this annotation. */
export const MAX_INFLIGHT_ANNOTATION = 'com.mayfly.max_inflight';

export interface AsyncConsumerHandle {
  stop(): Promise<void>;
  inflight(): number;
  /** Async calls running on this replica, per function (metrics). */
  inflightByFunction(): ReadonlyMap<string, number>;
  /** The durable consumer's backlog: waiting (num_pending) and delivered, not acked (num_ack_pending). */
  queueDepth(): Promise<{ waiting: number; running: number }>;
}

export async function startAsyncConsumer(
  nc: NatsConnection,
  config: MayflyConfig,
  log: Logger,
  place: (req: InvokeRequest) => Promise<string | null | void>,
  metrics?: SchedulerMetrics,
  /** Heartbeats: an attempt whose host stops beating is given up at the host TTL instead of its timeout. */
  hosts?: HostWatch,
): Promise<AsyncConsumerHandle> {
  const records = await CallRecords.open(nc, config.MAYFLY_RECORD_TTL_MS);
  const functions = await FunctionStore.open(nc, functionLimits(config));
  const consumer = await asyncConsumer(nc, { ackWaitMs: config.MAYFLY_ASYNC_ACK_WAIT_MS });
  const results = await AsyncResults.open(nc);
  const reconnects = new Reconnects(nc);
  const perFunction = new Map<string, number>();
  let running = 0;
  let stopped = false;

  /**
   * Runs attempt number `n`; null when no result came back in time (the worker or its host was lost).
   * The reply subject is stored by JetStream (lib/async-results.ts): a late result is found there.
   */
  async function attempt(call: AsyncCall, fn: InvokeRequest['fn'], msg: JsMsg, n: number): Promise<InvokeResult | null> {
    const inbox = results.subject(call.callId, n);
    const sub = nc.subscribe(inbox, { max: 1 });
    const keepAlive = setInterval(() => msg.working(), Math.max(500, config.MAYFLY_ASYNC_ACK_WAIT_MS / 3));
    const timeoutMs = fn.timeoutMs + config.MAYFLY_INVOKE_OVERHEAD_MS + config.MAYFLY_PLACEMENT_TIMEOUT_MS;
    let watch: LostWatch | undefined;
    try {
      const first = (async () => {
        for await (const m of sub) return invokeResultSchema.parse(jsonCodec.decode(m.data));
        return null;
      })();
      const host = await place({ callId: call.callId, fn, event: call.event, replyTo: inbox, receivedAt: call.submittedAt, offerExpiresAt: 0 });
      if (host && hosts) {
        watch = hosts.whenLost(host);
        // The record says where this attempt runs: a scheduler that takes the call over watches that host too.
        void records
          .update(call.callId, (r) => (r.status === 'running' && r.attempts === n ? { ...r, hostId: host } : null))
          .catch(() => {});
      }
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<null>((r) => (timer = setTimeout(() => r(null), timeoutMs)));
      const lost = watch
        ? watch.promise.then((h) => {
            log.warn({ callId: call.callId, attempt: n, host: h }, `host ${h} stopped heartbeating while it ran the call; giving the attempt up`);
            return null;
          })
        : timedOut;
      let result: InvokeResult | null = null;
      for (;;) {
        const back = reconnects.next();
        const r = await Promise.race([first, timedOut, lost, back.promise]);
        back.cancel();
        if (r !== 'reconnected') {
          result = r;
          break;
        }
        // Back on the bus after a NATS node died: a result published meanwhile is in the stream only.
        result = await results.stored(call.callId, n).catch(() => null);
        if (result) break;
      }
      clearTimeout(timer);
      return result ?? (await results.stored(call.callId, n));
    } finally {
      watch?.cancel();
      clearInterval(keepAlive);
      sub.unsubscribe();
    }
  }

  /**
   * The result of the attempt a lost scheduler was waiting for, waiting until that attempt's deadline; null
   * when none came. With heartbeats, waits only while the attempt's host (in the record) is alive, and, when
   * the record names no host, only as long as placing the attempt could have taken.
   */
  async function lostAttempt(call: AsyncCall, fn: InvokeRequest['fn'], record: CallRecord, msg: JsMsg): Promise<InvokeResult | null> {
    const startedAt = record.startedAt ? Date.parse(record.startedAt) : 0;
    const until = startedAt + fn.timeoutMs + config.MAYFLY_INVOKE_OVERHEAD_MS + config.MAYFLY_PLACEMENT_TIMEOUT_MS;
    const keepAlive = setInterval(() => msg.working(), Math.max(500, config.MAYFLY_ASYNC_ACK_WAIT_MS / 3));
    log.info({ callId: call.callId, attempt: record.attempts, host: record.hostId, until: new Date(until).toISOString() }, 'took over a running call; waiting for the result of its attempt');
    let watch: LostWatch | undefined;
    try {
      let result: InvokeResult | null;
      if (!hosts) result = await results.await(call.callId, record.attempts, until);
      else {
        let host = record.hostId;
        if (!host) {
          // Placed or not? Wait as long as placement may take, then look at the record again.
          const placedBy = Math.min(until, startedAt + config.MAYFLY_PLACEMENT_TIMEOUT_MS + config.MAYFLY_OFFER_TIMEOUT_MS + 2000);
          result = await results.await(call.callId, record.attempts, placedBy);
          if (result) return result;
          const now = await records.get(call.callId);
          if (now?.status !== 'running' || now.attempts !== record.attempts || !now.hostId) return null;
          host = now.hostId;
        }
        watch = hosts.whenLost(host);
        result = await results.await(call.callId, record.attempts, until, watch.promise);
      }
      if (result) log.info({ callId: call.callId, attempt: record.attempts }, 'took over a call: the lost attempt\'s result was stored, not running it again');
      return result;
    } finally {
      watch?.cancel();
      clearInterval(keepAlive);
    }
  }

  async function sendCallback(record: CallRecord, result: InvokeResult | null, policy: RetryPolicy): Promise<'sent' | 'failed'> {
    const mapped = result ? mapInvokeResult(result) : null;
    const headers: Record<string, string> = {
      'content-type': String(mapped?.headers['content-type'] ?? 'application/json'),
      'x-call-id': record.callId,
      'x-function-name': record.function,
      'x-function-status': String(record.statusCode ?? mapped?.statusCode ?? 500),
      'x-duration-seconds': ((result?.durationMs ?? 0) / 1000).toFixed(3),
      'x-retry': String(Math.max(0, record.attempts - 1)),
      'x-retry-max': String(Math.max(0, Math.max(policy.platformAttempts, policy.functionAttempts) - 1)),
      'x-mayfly-status': record.status,
    };
    const body = mapped ? mapped.body : Buffer.from(JSON.stringify({ error: record.error ?? record.status, callId: record.callId }));
    if (record.callbackUrl!.startsWith(NATS_CALLBACK_PROTOCOL)) return publishResult(record.callbackUrl!.slice(NATS_CALLBACK_PROTOCOL.length), headers, body);
    for (let i = 0; i < 3; i++) {
      try {
        const res = await fetch(record.callbackUrl!, {
          method: 'POST',
          headers,
          body: new Uint8Array(body),
          signal: AbortSignal.timeout(config.MAYFLY_CALLBACK_TIMEOUT_MS),
          redirect: 'manual',
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.status < 500) return 'sent';
      } catch (err) {
        log.warn({ callId: record.callId, err: (err as Error).message }, 'callback failed');
      }
      await new Promise((r) => setTimeout(r, 500 * 2 ** i));
    }
    return 'failed';
  }

  /**
   * A trigger call's result to a NATS subject (com.mayfly.reply_subject): one publish, confirmed by a
   * flush, with Nats-Msg-Id = call id so a function triggered by that subject runs once per result.
   */
  async function publishResult(subject: string, headers: Record<string, string>, body: Buffer): Promise<'sent' | 'failed'> {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(headers)) h.set(k, v);
    h.set('Nats-Msg-Id', headers['x-call-id']!); // a captured reply subject (a chain) stores it once
    try {
      nc.publish(subject, new Uint8Array(body), { headers: h });
      await nc.flush();
      return 'sent';
    } catch (err) {
      log.warn({ subject, err: (err as Error).message }, 'result could not be published');
      return 'failed';
    }
  }

  /** Claims the callback (pending → sending), POSTs it, records the outcome. At most one POST per call. */
  async function finishCallback(record: CallRecord, result: InvokeResult | null, policy: RetryPolicy): Promise<void> {
    if (!record.callbackUrl || record.callbackStatus !== 'pending') return;
    const claimed = await records.update(record.callId, (r) =>
      r.callbackStatus === 'pending' ? { ...r, callbackStatus: 'sending' } : null,
    );
    if (!claimed) return; // another scheduler has it
    const status = await sendCallback(claimed, result, policy);
    // The POST happened: record it even if NATS is briefly away (a restart), so nobody is tempted to resend.
    for (let i = 0; ; i++) {
      try {
        await records.update(record.callId, (r) => (r.callbackStatus === 'sending' ? { ...r, callbackStatus: status } : null));
        return;
      } catch (err) {
        if (i >= 120) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async function handle(msg: JsMsg): Promise<void> {
    let call: AsyncCall;
    try {
      call = asyncCallSchema.parse(jsonCodec.decode(msg.data));
    } catch {
      log.error({ seq: msg.seq }, 'dropping a malformed async message');
      msg.term();
      return;
    }
    const fn = await functions.get(call.functionName);
    const policy = retryPolicy(fn?.annotations ?? {}, {
      maxAttempts: config.MAYFLY_ASYNC_MAX_ATTEMPTS,
      minMs: config.MAYFLY_ASYNC_RETRY_MIN_MS,
      maxMs: config.MAYFLY_ASYNC_RETRY_MAX_MS,
    });
    let record = await records.get(call.callId);
    if (!record) {
      // The record expired or was never written: recreate it so the call still ends in one final record.
      await records.create(newRecord(call));
      record = await records.get(call.callId);
    }
    if (!record) throw new Error(`no record for call ${call.callId}`);
    if (isFinal(record.status)) {
      // A redelivery of a finished (or cancelled) call: only a callback may be left to do.
      await finishCallback(record, null, policy);
      msg.ack();
      return;
    }
    const now = () => new Date().toISOString();
    if (!fn) {
      const done = await records.update(call.callId, (r) =>
        isFinal(r.status)
          ? null
          : { ...r, status: 'cancelled', error: `function "${call.functionName}" was deleted before the call ran`, statusCode: 404, endedAt: now(), callbackStatus: r.callbackUrl ? 'pending' : undefined },
      );
      if (done) {
        metrics?.asyncFinished(call.functionName, 'cancelled', 404, 0);
        if (call.trigger) metrics?.triggerFinished(call.trigger, call.functionName, 'cancelled');
        await finishCallback(done, null, policy);
      }
      msg.ack();
      return;
    }
    const limit = Number(fn.annotations[MAX_INFLIGHT_ANNOTATION] ?? 0);
    if (limit > 0 && (perFunction.get(fn.name) ?? 0) >= limit) {
      msg.nak(200); // over its concurrency: back in the queue, no attempt counted
      return;
    }
    perFunction.set(fn.name, (perFunction.get(fn.name) ?? 0) + 1);
    try {
      const t0 = performance.now();
      // Start an attempt only if nobody else started one since we read the record (compare-and-set on
      // `attempts`). When another holder of this message did (a redelivery running twice at once), or a
      // holder died while its attempt ran, that attempt's result, stored or still to come, is the call's.
      let observed = record;
      let result: InvokeResult | null = null;
      let started: CallRecord | null = null;
      for (let round = 0; !started; round++) {
        if (observed.status === 'running' && observed.attempts > 0) {
          result = await lostAttempt(call, fn, observed, msg);
          if (result) {
            started = observed;
            break;
          }
        }
        if (round >= 5) throw new Error(`call ${call.callId} keeps being started by other schedulers`);
        const seen = observed.attempts;
        let raced: CallRecord | null = null;
        started = await records.update(call.callId, (r) => {
          if (isFinal(r.status)) return null;
          if (r.attempts !== seen) {
            raced = r;
            return null;
          }
          return { ...r, status: 'running', attempts: r.attempts + 1, startedAt: now(), hostId: undefined };
        });
        if (started) result = await attempt(call, fn, msg, started.attempts);
        else if (raced) observed = raced;
        else {
          msg.ack(); // became final meanwhile (cancelled)
          return;
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      const statusCode = result ? mapInvokeResult(result).statusCode : 502;
      const d = decide(result, statusCode, started.attempts, policy);
      if (d.action !== 'final') {
        const why = result?.outcome.kind === 'platform' ? result.outcome.message : 'no result: the worker or its host was lost';
        await records.update(call.callId, (r) =>
          isFinal(r.status) ? null : { ...r, status: 'queued', error: why, attempts: d.action === 'requeue' ? r.attempts - 1 : r.attempts },
        );
        log.info({ callId: call.callId, fn: fn.name, action: d.action, delayMs: d.delayMs, attempts: started.attempts }, why);
        metrics?.asyncRetried(fn.name);
        msg.nak(d.delayMs);
        return;
      }
      const value = result?.outcome.kind === 'value' ? result.outcome.value : undefined;
      const error =
        result === null
          ? 'no result: the worker or its host was lost'
          : result.outcome.kind === 'error'
            ? result.outcome.error.message
            : result.outcome.kind === 'platform'
              ? result.outcome.message
              : undefined;
      const done = await records.update(call.callId, (r) =>
        isFinal(r.status)
          ? null
          : {
              ...r,
              status: d.status,
              statusCode,
              ...(value !== undefined ? { result: value } : {}),
              ...(error !== undefined ? { error } : {}),
              ...(result?.outcome.kind === 'error' && result.outcome.error.stack ? { errorStack: result.outcome.error.stack.slice(0, 64 * 1024) } : {}),
              logs: result?.logs ?? [],
              endedAt: now(),
              ...(result?.start ? { start: result.start } : {}),
              ...(result?.hostId ? { hostId: result.hostId } : {}),
              ...(r.callbackUrl ? { callbackStatus: 'pending' as const } : {}),
            },
      );
      if (done) {
        metrics?.asyncFinished(fn.name, d.status, statusCode, seconds);
        if (call.trigger) metrics?.triggerFinished(call.trigger, fn.name, d.status);
        await finishCallback(done, result, policy);
      }
      msg.ack();
    } finally {
      perFunction.set(fn.name, (perFunction.get(fn.name) ?? 1) - 1);
    }
  }

  async function loop(): Promise<void> {
    while (!stopped) {
      let msg: JsMsg | null = null;
      try {
        msg = await consumer.next({ expires: 2000 });
      } catch (err) {
        if (!stopped) log.warn({ err: (err as Error).message }, 'async queue unavailable; retrying');
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!msg) continue;
      running++;
      try {
        await handle(msg);
      } catch (err) {
        // Anything unexpected (NATS down mid-call): leave the message for redelivery.
        log.error({ err: (err as Error).message, callId: callIdOf(msg) }, 'async call failed in the scheduler; it will be redelivered');
        try {
          msg.nak(config.MAYFLY_ASYNC_RETRY_MIN_MS);
        } catch {
          // connection gone: ack_wait redelivers it
        }
      } finally {
        running--;
      }
    }
  }

  const loops = Array.from({ length: config.MAYFLY_ASYNC_CONCURRENCY }, () => loop());
  return {
    inflight: () => running,
    inflightByFunction: () => perFunction,
    async queueDepth() {
      const info = await consumer.info();
      return { waiting: info.num_pending, running: info.num_ack_pending };
    },
    async stop() {
      stopped = true;
      await Promise.allSettled(loops);
      reconnects.stop();
    },
  };
}

/** The call id of a queued message, for log lines; undefined when it is not a valid call. */
function callIdOf(msg: JsMsg): string | undefined {
  try {
    return asyncCallSchema.parse(jsonCodec.decode(msg.data)).callId;
  } catch {
    return undefined;
  }
}
