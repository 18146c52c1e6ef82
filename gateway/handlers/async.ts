/**
 * Async invocation and call records:
 *   POST   /async-function/:name[/*]     queue a call → 202 + X-Call-Id (stored in JetStream first)
 *   DELETE /async-function/:callId       cancel a call that has not started
 *   GET    /system/invocations/:callId   one call record (sync or async)
 *   GET    /system/invocations           ?function=&status=&limit=
 * A client may choose the call id (X-Call-Id or Idempotency-Key): the same id
 * is accepted once; sending it again answers 202 with `duplicate: true`.
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { callStatusSchema } from '../../contracts/bus.js';
import type { GatewayDeps } from '../deps.js';
import { GatewayError } from '../errors.js';
import { parseFunctionName } from '../validation.js';
import { CALL_ID_PATTERN, invocationOf } from './invoke.js';

function callbackUrl(raw: string | string[] | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const value = Array.isArray(raw) ? raw[0] : raw;
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    throw new GatewayError(400, 'INVALID_CALLBACK_URL', `X-Callback-Url ${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new GatewayError(400, 'INVALID_CALLBACK_URL', 'X-Callback-Url must be an http:// or https:// URL');
  }
  return url.toString();
}

export function asyncInvoke(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const { fn, callId, event } = invocationOf(request);
    const callback = callbackUrl(request.headers['x-callback-url']);
    let duplicate: boolean;
    try {
      ({ duplicate } = await deps.backend.submitAsync(fn, {
        callId,
        functionName: fn.name,
        event,
        submittedAt: Date.now(),
        ...(callback ? { callbackUrl: callback } : {}),
      }));
    } catch (err) {
      request.log.error({ err, callId }, 'could not queue an async call');
      throw new GatewayError(503, 'QUEUE_UNAVAILABLE', 'the call could not be stored in the queue; it was not accepted, retry it', { callId });
    }
    return reply.code(202).send({ callId, status: 'queued', ...(duplicate ? { duplicate: true } : {}) });
  };
}

function parseCallId(raw: unknown): string {
  if (typeof raw === 'string' && CALL_ID_PATTERN.test(raw)) return raw;
  throw new GatewayError(400, 'INVALID_CALL_ID', `invalid call id ${JSON.stringify(String(raw))}: 1 to 128 characters of A-Z a-z 0-9 . _ -`);
}

export function cancelCall(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const callId = parseCallId((request.params as { callId?: unknown }).callId);
    const { cancelled, record } = await deps.backend.cancelCall(callId);
    if (!record) throw new GatewayError(404, 'CALL_NOT_FOUND', `no call with id ${callId}`);
    if (!cancelled) {
      throw new GatewayError(409, 'CALL_NOT_CANCELLABLE', `call ${callId} is ${record.status}; only a queued call can be cancelled`, {
        status: record.status,
      });
    }
    return reply.code(202).send({ callId, status: record.status });
  };
}

export function getCall(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest) => {
    const callId = parseCallId((request.params as { callId?: unknown }).callId);
    const record = await deps.backend.getCall(callId);
    if (!record) throw new GatewayError(404, 'CALL_NOT_FOUND', `no call with id ${callId} (records expire after MAYFLY_RECORD_TTL_MS)`);
    return record;
  };
}

export function listCalls(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest) => {
    const q = request.query as Record<string, unknown>;
    const fnName = q.function === undefined ? undefined : parseFunctionName(q.function);
    const status = q.status === undefined ? undefined : callStatusSchema.safeParse(q.status);
    if (status && !status.success) {
      throw new GatewayError(400, 'INVALID_QUERY', `status must be one of ${callStatusSchema.options.join(', ')}`, { field: 'status' });
    }
    const limit = q.limit === undefined ? 50 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new GatewayError(400, 'INVALID_QUERY', 'limit must be an integer from 1 to 1000', { field: 'limit' });
    }
    return deps.backend.listCalls({
      limit,
      ...(fnName ? { function: fnName } : {}),
      ...(status?.success ? { status: status.data } : {}),
    });
  };
}
