/**
 * The gateway's backend over NATS: function specs and code through
 * FunctionStore, synchronous invocations as NATS requests to the scheduler
 * queue group (the worker that runs the call answers the request directly).
 */
import { RequestError, TimeoutError } from '@nats-io/transport-node';
import { invokeResultSchema, SUBJECTS, type InvokeResult, type Trace } from '../contracts/bus.js';
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
import type { GatewayBackend } from './backend.js';

export async function createNatsBackend(
  config: MayflyConfig,
): Promise<{ backend: GatewayBackend; nc: NatsConnection; close(): Promise<void> }> {
  const nc = await connectNats(config.MAYFLY_NATS_URL, 'mayfly-gateway');
  const store = await FunctionStore.open(nc, functionLimits(config));

  const records = await CallRecords.open(nc, config.MAYFLY_RECORD_TTL_MS);
  await ensureAsyncStream(nc);
  const publisher = new AsyncPublisher(nc);

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

  async function invoke(fn: FunctionRecord, callId: string, event: InvocationEvent, trace?: Trace): Promise<InvokeResult> {
    const queuedAt = new Date();
    const result = await invokeOnce(fn, callId, event, trace);
    await recordSync(fn, result, queuedAt);
    return result;
  }

  async function invokeOnce(fn: FunctionRecord, callId: string, event: InvocationEvent, trace?: Trace): Promise<InvokeResult> {
    const t0 = performance.now();
    const platform = (code: 'NO_SCHEDULER' | 'FUNCTION_TIMEOUT' | 'INTERNAL', message: string): InvokeResult => ({
      callId,
      durationMs: performance.now() - t0,
      logs: [],
      outcome: { kind: 'platform', code, message },
    });
    const timeout = fn.timeoutMs + config.MAYFLY_INVOKE_OVERHEAD_MS;
    try {
      // replyTo is the request's own inbox: the scheduler takes it from the message.
      stamp(trace, 'gw-send');
      const msg = await nc.request(SUBJECTS.invoke, jsonCodec.encode({ callId, fn, event, receivedAt: Date.now(), trace }), {
        timeout,
      });
      const at = performance.timeOrigin + performance.now();
      const parsed = invokeResultSchema.safeParse(jsonCodec.decode(msg.data));
      if (parsed.success) stamp(parsed.data.trace, 'gw-result', at);
      return parsed.success ? parsed.data : platform('INTERNAL', `malformed result for call ${callId}`);
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

  const backend: GatewayBackend = {
    createFunction: async (req) => {
      await checkSecrets(req);
      return store.create(req);
    },
    updateFunction: async (req) => {
      await checkSecrets(req);
      return store.update(req);
    },
    createSecret: (name, value) => secrets.create(name, value),
    updateSecret: (name, value) => secrets.update(name, value),
    listSecrets: () => secrets.list(),
    deleteSecret: (name) => secrets.remove(name),
    getFunction: (name) => store.get(name),
    listFunctions: () => store.list(),
    deleteFunction: (name) => store.remove(name),
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
    getCall: (callId) => records.get(callId),
    listCalls: (filter) => records.list(filter),
    cancelCall: (callId) => records.cancel(callId),
    healthy: () => !nc.isClosed(),
    functionLogs: (query) => readFunctionLogs(nc, query),
  };
  return { backend, nc, close: () => nc.drain().catch(() => {}) };
}
