/**
 * The gateway's backend over NATS: function specs and code through
 * FunctionStore (lookups from the in-memory FunctionCache), synchronous
 * invocations in one bus hop when a worker already holds a VM or a snapshot of
 * the function version (a request to its per-function subject, which those
 * workers subscribe to in one queue group), and otherwise — no responders, or
 * the worker refused before starting anything — a request to the scheduler
 * queue group, which places the call (the worker that runs it answers the
 * request directly). A call is never sent twice once a worker took it.
 */
import { RequestError, TimeoutError } from '@nats-io/transport-node';
import { directReplySchema, invokeResultSchema, SUBJECTS, type InvokeResult, type Trace } from '../contracts/bus.js';
import { FunctionCache } from '../lib/function-cache.js';
import { stamp } from '../lib/trace.js';
import { AsyncPublisher, ensureAsyncStream } from '../lib/async-queue.js';
import { CallRecords, newRecord } from '../lib/call-records.js';
import { mapInvokeResult } from '../lib/response-mapping.js';
import type { MayflyConfig } from '../contracts/config.js';
import type { DeployRequest, FunctionRecord } from '../contracts/functions.js';
import type { InvocationEvent } from '../contracts/guest-protocol.js';
import { secretsKey } from '../lib/credentials.js';
import { FunctionStore, FunctionStoreError, functionLimits } from '../lib/function-store.js';
import { readFunctionLogs } from '../lib/function-logs.js';
import { SecretStore } from '../lib/secrets.js';
import { connectNats, jsonCodec, type NatsConnection } from '../lib/nats.js';
import { topicSubjects } from '../lib/trigger-annotations.js';
import { syncTriggerStream, TriggerSubjectConflict } from '../lib/trigger-stream.js';
import type { GatewayBackend } from './backend.js';
import { AcceptedCalls } from '../lib/accepted-calls.js';
import { HostWatch } from '../lib/host-watch.js';
import { BusProbe } from '../lib/bus-probe.js';

/** The one-hop request was taken by no worker in time (see invokeTracked). */
class DirectUnseen extends Error {}

export async function createNatsBackend(
  config: MayflyConfig,
): Promise<{ backend: GatewayBackend; nc: NatsConnection; close(): Promise<void> }> {
  const nc = await connectNats(config.MAYFLY_NATS_URL, 'mayfly-gateway', { jsReplicas: config.MAYFLY_JS_REPLICAS });
  const store = await FunctionStore.open(nc, functionLimits(config));
  const functions = await FunctionCache.open(nc);

  const records = await CallRecords.open(nc, config.MAYFLY_RECORD_TTL_MS);
  await ensureAsyncStream(nc);
  const publisher = new AsyncPublisher(nc);
  // A sync call whose host stops heartbeating is answered HOST_LOST then, not at its timeout.
  const busProbe = new BusProbe(nc);
  const hostWatch = new HostWatch(config.MAYFLY_HOST_TTL_MS, nc, { ownBusLostForMs: () => busProbe.lostForMs() });
  const accepted = new AcceptedCalls(nc, hostWatch);

  /** A sync call's record, written once it is done (best effort: the caller has its answer already). */
  async function recordSync(fn: FunctionRecord, result: InvokeResult, queuedAt: Date): Promise<void> {
    const statusCode = mapInvokeResult(result).statusCode;
    await records
      .put({
        callId: result.callId,
        function: fn.name,
        mode: 'sync',
        status: statusCode >= 500 || result.outcome.kind !== 'value' ? 'failed' : 'succeeded',
        attempts: 1,
        statusCode,
        ...(result.outcome.kind === 'value' && result.outcome.value !== undefined ? { result: result.outcome.value } : {}),
        ...(result.outcome.kind === 'error' ? { error: result.outcome.error.message } : {}),
        ...(result.outcome.kind === 'error' && result.outcome.error.stack ? { errorStack: result.outcome.error.stack } : {}),
        ...(result.outcome.kind === 'platform' ? { error: result.outcome.message } : {}),
        logs: result.logs,
        queuedAt: queuedAt.toISOString(),
        startedAt: queuedAt.toISOString(),
        endedAt: new Date().toISOString(),
        ...(result.start ? { start: result.start } : {}),
        ...(result.hostId ? { hostId: result.hostId } : {}),
      })
      .catch(() => {});
  }

  /**
   * Sync call records are written after the answer (off the caller's time);
   * reads of call records through this gateway wait for its pending writes, so
   * a client that made a call and then asks for its record finds it.
   */
  const pendingRecords = new Set<Promise<void>>();
  const recordsWritten = async (): Promise<void> => {
    if (pendingRecords.size) await Promise.allSettled([...pendingRecords]);
  };

  async function invoke(fn: FunctionRecord, callId: string, event: InvocationEvent, trace?: Trace): Promise<InvokeResult> {
    const queuedAt = new Date();
    const result = await invokeOnce(fn, callId, event, trace);
    const p = recordSync(fn, result, queuedAt).finally(() => pendingRecords.delete(p));
    pendingRecords.add(p);
    return result;
  }

  async function invokeOnce(fn: FunctionRecord, callId: string, event: InvocationEvent, trace?: Trace): Promise<InvokeResult> {
    const tracked = accepted.track(callId);
    try {
      return await invokeTracked(fn, callId, event, tracked.acceptedTo, tracked.lost, tracked.accepted, trace);
    } finally {
      tracked.done();
    }
  }

  async function invokeTracked(
    fn: FunctionRecord,
    callId: string,
    event: InvocationEvent,
    acceptedTo: string,
    lost: Promise<string>,
    accepted: Promise<string>,
    trace?: Trace,
  ): Promise<InvokeResult> {
    const t0 = performance.now();
    const platform = (code: 'NO_SCHEDULER' | 'FUNCTION_TIMEOUT' | 'INTERNAL' | 'HOST_LOST', message: string): InvokeResult => ({
      callId,
      durationMs: performance.now() - t0,
      logs: [],
      outcome: { kind: 'platform', code, message },
    });
    const timeout = fn.timeoutMs + config.MAYFLY_INVOKE_OVERHEAD_MS;
    const result = (body: unknown, at = performance.timeOrigin + performance.now()): InvokeResult => {
      const parsed = invokeResultSchema.safeParse(body);
      if (parsed.success) stamp(parsed.data.trace, 'gw-result', at);
      return parsed.success ? parsed.data : platform('INTERNAL', `malformed result for call ${callId}`);
    };
    // replyTo is the request's own inbox: the worker (or the scheduler) takes it from the message.
    const request = { callId, fn, event, receivedAt: Date.now(), trace, acceptedTo };
    /** The request's answer, or HOST_LOST when the host that admitted the call stops heartbeating first. */
    const orLost = <T>(p: Promise<T>, unseen?: Promise<{ unseen: true }>): Promise<{ msg: T } | { lost: InvokeResult } | { unseen: true }> => {
      p.catch(() => {}); // its timeout still fires after a HOST_LOST answer
      return Promise.race([
        ...(unseen ? [unseen] : []),
        p.then((msg) => ({ msg })),
        lost.then((host) => ({
          lost: { ...platform(
            'HOST_LOST',
            `host ${host} stopped heartbeating while it ran the call (no heartbeat for ${config.MAYFLY_HOST_TTL_MS} ms); the function may or may not have run, so the call was not retried`,
          ), hostId: host },
        })),
      ]);
    };
    try {
      stamp(trace, 'gw-send');
      // One hop: a worker must take the call within half the offer timeout (it refuses an older request) and
      // says so at once (CallAccepted). Neither within the offer timeout: no live worker got it (a host cut
      // off the network whose connection NATS has not dropped yet), so nothing runs it: the scheduler places it.
      let unseenTimer: NodeJS.Timeout | undefined;
      const unseen = new Promise<{ unseen: true }>((r) => {
        unseenTimer = setTimeout(() => r({ unseen: true }), config.MAYFLY_OFFER_TIMEOUT_MS);
        void accepted.then(() => clearTimeout(unseenTimer));
      });
      const direct = { ...request, offerExpiresAt: Date.now() + config.MAYFLY_OFFER_TIMEOUT_MS / 2 };
      const answer = await orLost(nc.request(SUBJECTS.functionInvoke(fn.name, fn.version), jsonCodec.encode(direct), { timeout }), unseen).finally(() =>
        clearTimeout(unseenTimer),
      );
      if ('lost' in answer) return { ...answer.lost, route: 'direct' };
      if ('unseen' in answer) throw new DirectUnseen();
      const msg = answer.msg;
      const at = performance.timeOrigin + performance.now();
      const body = jsonCodec.decode(msg.data);
      if (!directReplySchema.safeParse(body).success) return { ...result(body, at), route: 'direct' };
      // The worker started nothing: placement by the scheduler.
      stamp(trace, 'gw-refused');
    } catch (err) {
      if (err instanceof DirectUnseen) stamp(trace, 'gw-unseen');
      else if (!(err instanceof RequestError && err.isNoResponders())) {
        if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) {
          return platform('FUNCTION_TIMEOUT', `no result within ${timeout} ms (function timeout ${fn.timeoutMs} ms plus start overhead)`);
        }
        throw err;
      }
    }
    try {
      stamp(trace, 'gw-place');
      const answer = await orLost(nc.request(SUBJECTS.invoke, jsonCodec.encode(request), { timeout }));
      if (!('msg' in answer)) return { ...(answer as { lost: InvokeResult }).lost, route: 'placed' };
      const msg = answer.msg;
      return { ...result(jsonCodec.decode(msg.data)), route: 'placed' };
    } catch (err) {
      if (err instanceof RequestError && err.isNoResponders()) {
        return platform('NO_SCHEDULER', 'no scheduler is running; start one with `npx mayfly scheduler`');
      }
      if (err instanceof TimeoutError || (err instanceof RequestError && err.cause instanceof TimeoutError)) {
        return platform('FUNCTION_TIMEOUT', `no result within ${timeout} ms (function timeout ${fn.timeoutMs} ms plus start overhead)`);
      }
      throw err;
    }
  }

  const secrets = await SecretStore.open(nc, secretsKey(config).key);
  /** A function may only list secrets that exist: say so at deploy time, not at its first call. */
  async function checkSecrets(req: DeployRequest): Promise<void> {
    for (const name of req.secrets ?? []) {
      if (!(await secrets.exists(name))) {
        throw new FunctionStoreError('INVALID', `secret "${name}" does not exist; create it with POST /system/secrets`, 'secrets');
      }
    }
  }

  /**
   * Subject triggers: the capture stream takes the function's new `topic`
   * subjects before the record is stored (a subject another stream holds is a
   * 400, and nothing is stored), and drops the ones no function uses after.
   * The scheduler repeats the second step on every change.
   */
  const hasTopic = (annotations: Record<string, string> | undefined) => {
    try {
      return topicSubjects(annotations ?? {}).length > 0;
    } catch {
      return true; // a record from before topics were checked: bring the stream in step anyway
    }
  };
  async function withTriggers<T>(name: string, before: Record<string, string> | undefined, after: Record<string, string> | undefined, save: () => Promise<T>): Promise<T> {
    if (!hasTopic(before) && !hasTopic(after)) return save();
    if (after && hasTopic(after)) {
      const others = (await store.list()).filter((f) => f.name !== name);
      try {
        await syncTriggerStream(nc, [...others, { annotations: after }, ...(before ? [{ annotations: before }] : [])]);
      } catch (err) {
        if (err instanceof TriggerSubjectConflict) throw new FunctionStoreError('INVALID', `annotation "topic": ${err.message}`, 'annotations.topic');
        throw err;
      }
    }
    const out = await save();
    await syncTriggerStream(nc, await store.list()).catch(() => {}); // the scheduler repairs it if this fails
    return out;
  }

  const backend: GatewayBackend = {
    createFunction: async (req) => {
      await checkSecrets(req);
      const fn = await withTriggers(req.service, undefined, req.annotations, () => store.create(req));
      await functions.refresh(fn.name);
      return fn;
    },
    updateFunction: async (req) => {
      await checkSecrets(req);
      const old = await store.get(req.service);
      const fn = await withTriggers(req.service, old?.annotations, req.annotations ?? {}, () => store.update(req));
      await functions.refresh(fn.name);
      return fn;
    },
    createSecret: (name, value) => secrets.create(name, value),
    updateSecret: (name, value) => secrets.update(name, value),
    listSecrets: () => secrets.list(),
    deleteSecret: (name) => secrets.remove(name),
    getFunction: (name) => functions.get(name),
    listFunctions: () => store.list(),
    deleteFunction: async (name) => {
      const old = await store.get(name);
      const removed = await withTriggers(name, old?.annotations, undefined, () => store.remove(name));
      await functions.refresh(name);
      return removed;
    },
    scaleFunction: async (name, replicas) => {
      const fn = await store.setReplicas(name, replicas);
      await functions.refresh(name);
      return fn;
    },
    invoke,
    async submitAsync(_fn, call) {
      if (!(await records.create(newRecord(call)))) return { duplicate: true };
      try {
        await publisher.publish(call);
      } catch (err) {
        // Not stored, so not accepted: forget the record, and the client may retry with the same id.
        await records.remove(call.callId).catch(() => {});
        throw err;
      }
      return { duplicate: false };
    },
    getCall: async (callId) => {
      await recordsWritten();
      return records.get(callId);
    },
    listCalls: async (filter) => {
      await recordsWritten();
      return records.list(filter);
    },
    cancelCall: (callId) => records.cancel(callId),
    // A gateway cut off the bus longer than MAYFLY_BUS_LOST_MS answers /healthz 503: the load balancer takes it out.
    healthy: () => !nc.isClosed() && busProbe.lostForMs() <= config.MAYFLY_BUS_LOST_MS,
    functionLogs: async (query) => {
      await recordsWritten();
      return readFunctionLogs(nc, query);
    },
  };
  return {
    backend,
    nc,
    close: async () => {
      await recordsWritten();
      functions.stop();
      accepted.stop();
      hostWatch.stop();
      busProbe.stop();
      await nc.drain().catch(() => {});
    },
  };
}
