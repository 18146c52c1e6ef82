/**
 * Synchronous invocation: ANY /function/:name and ANY /function/:name/*.
 *
 * Order: the name is validated and the function looked up in onRequest, before the
 * body is read (unknown function → 404 without reading a byte of it); then the body
 * is read as raw bytes up to maxBodyBytes (413 above); then the event is built and
 * handed to backend.invoke. Every response from then on carries X-Call-Id,
 * X-Duration-Seconds, and X-Mayfly-Start / X-Mayfly-Host when the result names them
 * (onSend hook, so error responses such as 413 get them too).
 */
import { randomUUID } from 'node:crypto';
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  onRequestAsyncHookHandler,
  onSendHookHandler,
  RouteHandlerMethod,
} from 'fastify';
import type { InvokeResult } from '../../contracts/bus.js';
import type { GatewayDeps } from '../deps.js';
import { GatewayError } from '../errors.js';
import {
  getInvocationContext,
  invocationSeconds,
  setInvocationContext,
} from '../invocation-context.js';
import { buildInvocationEvent, invocationPath, MAX_PATH_CHARS } from '../invocation-event.js';
import { mapInvokeResult, platformHeaders } from '../../lib/response-mapping.js';
import { parseFunctionName } from '../validation.js';
import { serverTiming, stamp, TRACE_HEADER } from '../../lib/trace.js';

/** A client-chosen call id is used only when it matches this; otherwise a UUID is generated. */
export const CALL_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

export function chooseCallId(header: string | string[] | undefined): string {
  return typeof header === 'string' && CALL_ID_PATTERN.test(header) ? header : randomUUID();
}

/**
 * Makes this (encapsulated) scope accept any content type as raw bytes, so the
 * function gets exactly what the client sent. Only the invocation routes use it.
 */
export function acceptRawBodies(scope: FastifyInstance, bodyLimit: number): void {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_request, body, done) => {
    done(null, body);
  });
}

/** onRequest: validates the name, finds the function, picks the call id, starts the clock. */
export function resolveInvocation(deps: GatewayDeps): onRequestAsyncHookHandler {
  return async (request: FastifyRequest) => {
    const name = parseFunctionName((request.params as { name?: unknown }).name);
    const fn = await deps.backend.getFunction(name);
    if (!fn) throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${name}" not found; deploy it with POST /system/functions`);
    await deps.auth?.checkInvoke(request, fn);
    const path = invocationPath(request.url);
    if (path.length > MAX_PATH_CHARS) {
      throw new GatewayError(414, 'PATH_TOO_LONG', `the path after /function/${name} is ${path.length} characters; at most ${MAX_PATH_CHARS}`);
    }
    const acceptedAt = performance.now();
    setInvocationContext(request, {
      fn,
      callId: chooseCallId(request.headers['x-call-id'] ?? request.headers['idempotency-key']),
      acceptedAt,
      ...(request.headers[TRACE_HEADER] === '1' ? { trace: [['gw-accept', performance.timeOrigin + acceptedAt]] } : {}),
    });
  };
}

/**
 * Content types a browser runs as a document (scripts included). Functions share the
 * console's origin (/ui/), so such an answer is sandboxed: an opaque origin, which
 * cannot read the gateway's other answers nor send its SameSite=Strict session cookie,
 * and so cannot act as the operator who opened it. JSON, text and binary answers are
 * untouched; `nosniff` keeps a browser from treating them as HTML.
 */
const DOCUMENT_TYPES = /^\s*(?:text\/html|application\/xhtml\+xml|image\/svg\+xml|text\/xml|application\/xml|[a-z-]+\/[a-z0-9.+-]*\+xml)\b/i;
export const FUNCTION_DOCUMENT_CSP = 'sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads';

/** onSend: the platform headers on every response of an accepted invocation. */
export const addPlatformHeaders: onSendHookHandler = async (request, reply, payload) => {
  reply.header('x-content-type-options', 'nosniff');
  const type = reply.getHeader('content-type');
  if (typeof type === 'string' && DOCUMENT_TYPES.test(type)) {
    // A function's own CSP header is kept; this one is enforced as well (every CSP applies).
    const own = reply.getHeader('content-security-policy');
    reply.header('content-security-policy', own ? [...(Array.isArray(own) ? own : [String(own)]), FUNCTION_DOCUMENT_CSP] : FUNCTION_DOCUMENT_CSP);
  }
  const ctx = getInvocationContext(request);
  if (ctx) {
    const trace = ctx.result?.trace ?? ctx.trace;
    if (trace) {
      stamp(trace, 'gw-reply');
      reply.header('server-timing', serverTiming(trace));
    }
    reply.headers(
      platformHeaders({
        callId: ctx.callId,
        durationSeconds: invocationSeconds(ctx),
        start: ctx.result?.start,
        hostId: ctx.result?.hostId,
      }),
    );
  }
  return payload;
};

/** The resolved function, call id and event of an invocation request (sync or async). */
export function invocationOf(request: FastifyRequest) {
  const ctx = getInvocationContext(request);
  if (!ctx) throw new Error('invocation context missing (resolveInvocation hook not run)');
  const event = buildInvocationEvent({
    method: request.method,
    url: request.url,
    headers: request.headers,
    body: Buffer.isBuffer(request.body) ? request.body : undefined,
    callId: ctx.callId,
  });
  return { ctx, fn: ctx.fn, callId: ctx.callId, event };
}

export function invoke(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const { ctx, fn, callId, event } = invocationOf(request);

    deps.metrics.invocationStartedFor(fn.name);
    stamp(ctx.trace, 'gw-body');
    let result: InvokeResult;
    try {
      result = await deps.backend.invoke(fn, callId, event, ctx.trace);
    } catch (err) {
      // The backend promises platform failures as results; a rejection is a bug: still answer with the call id.
      request.log.error({ err, callId, function: fn.name }, 'backend.invoke rejected');
      result = { callId, durationMs: 0, logs: [], outcome: { kind: 'platform', code: 'INTERNAL', message: 'internal error' } };
    }
    ctx.finishedAt = performance.now();
    ctx.result = result;
    if (result.route) deps.metrics.routed(result.route);
    if (result.callId !== callId) {
      request.log.warn({ callId, resultCallId: result.callId }, 'backend answered with another call id');
    }

    const mapped = mapInvokeResult({ ...result, callId });
    deps.metrics.invocationFinished(fn.name, mapped.statusCode, invocationSeconds(ctx));
    reply.code(mapped.statusCode).headers(mapped.headers);
    // An empty body is sent as nothing, so Fastify does not label it application/octet-stream.
    return mapped.body.length === 0 ? reply.send() : reply.send(mapped.body);
  };
}
