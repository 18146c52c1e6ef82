/**
 * Every error the gateway answers with, and the one place that turns thrown
 * errors into HTTP responses.
 *
 * Each error body is JSON `{ error: <message a user can act on>, code: <UPPER_SNAKE>, ...details }`.
 * What the user can fix is a 4xx naming the problem; anything unexpected is a
 * 500 `{ error: "internal error", code: "INTERNAL", requestId }` and is logged.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { FunctionStoreError } from '../lib/function-store.js';
import { getInvocationContext } from './invocation-context.js';

export interface ErrorBody {
  error: string;
  code: string;
  [detail: string]: unknown;
}

/** An error with its HTTP status and body: throw it from a handler or hook. */
export class GatewayError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'GatewayError';
  }

  toBody(): ErrorBody {
    return { error: this.message, code: this.code, ...this.details };
  }
}

/** Route config key that tells the 413 message which setting limits the body. */
export interface BodyLimitRouteConfig {
  bodyLimitHint?: string;
}

const FUNCTION_STORE_STATUS: Record<FunctionStoreError['code'], { status: number; code: string }> = {
  NOT_FOUND: { status: 404, code: 'FUNCTION_NOT_FOUND' },
  ALREADY_EXISTS: { status: 409, code: 'FUNCTION_EXISTS' },
  INVALID: { status: 400, code: 'INVALID_BODY' },
  CONFLICT: { status: 409, code: 'CONFLICT' },
};

export function functionStoreErrorToGatewayError(err: FunctionStoreError): GatewayError {
  const m = FUNCTION_STORE_STATUS[err.code];
  const details = err.field !== undefined ? { field: err.field } : {};
  let message = err.message;
  if (err.code === 'INVALID' && err.field !== undefined) message = `invalid request body: ${message}`;
  if (err.code === 'ALREADY_EXISTS' && !message.includes('PUT')) message = `${message}; update it with PUT /system/functions`;
  return new GatewayError(m.status, m.code, message, details);
}

// ---- zod issues → one message naming the field -----------------------------------------

type Issue = z.core.$ZodIssue;

function fieldOf(path: readonly PropertyKey[]): string {
  return path.map((p) => String(p)).join('.');
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function stripZodPrefix(message: string): string {
  return message.replace(/^(Invalid input|Too small|Too big): /, '');
}

interface DescribedIssue {
  /** Dotted path of the offending field ("" for the body itself). */
  field: string;
  message: string;
  /** What the message is prefixed with (the field, or its parent for unknown keys). */
  at: string;
}

/** One issue, with a message a user understands. */
function describeIssue(issue: Issue, input: unknown, allowedRootFields?: readonly string[]): DescribedIssue {
  const at = fieldOf(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const names = issue.keys.map((k) => `"${k}"`).join(', ');
      const allowed = issue.path.length === 0 && allowedRootFields ? ` (known fields: ${allowedRootFields.join(', ')})` : '';
      return {
        field: fieldOf([...issue.path, issue.keys[0] ?? '']),
        message: `unknown field${issue.keys.length > 1 ? 's' : ''} ${names}${allowed}`,
        at,
      };
    }
    case 'invalid_type': {
      const actual = valueAt(input, issue.path);
      const message = actual === undefined ? `is required (${article(issue.expected)})` : `must be ${article(issue.expected)}, got ${describeType(actual)}`;
      return { field: at, message, at };
    }
    case 'invalid_union': {
      const expected = issue.errors.flatMap((branch) => branch.filter((i) => i.code === 'invalid_type').map((i) => i.expected));
      if (expected.length === issue.errors.length && expected.length > 0) {
        const actual = describeType(valueAt(input, issue.path));
        return { field: at, message: `must be ${expected.map(article).join(' or ')}, got ${actual}`, at };
      }
      return { field: at, message: stripZodPrefix(issue.message), at };
    }
    case 'invalid_value': {
      // Schemas with their own message (e.g. runtime) keep it.
      if (!/^Invalid (option|input)/.test(issue.message)) return { field: at, message: issue.message, at };
      return { field: at, message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`, at };
    }
    case 'invalid_key': {
      // The path ends with the bad key; the field is the map that holds it.
      const parent = fieldOf(issue.path.slice(0, -1));
      const key = issue.path[issue.path.length - 1];
      const inner = issue.issues[0];
      return {
        field: parent,
        message: `invalid name ${JSON.stringify(String(key))}${inner ? `: ${stripZodPrefix(inner.message)}` : ''}`,
        at: parent,
      };
    }
    default:
      return { field: at, message: stripZodPrefix(issue.message), at };
  }
}

/**
 * A 400 whose message names every bad field and whose `field` is the first one, e.g.
 * `{"error":"invalid request body: service: must be 1 to 63 characters ...","code":"INVALID_BODY","field":"service"}`.
 */
export function zodToGatewayError(
  error: z.ZodError,
  input: unknown,
  opts: { code: string; what: string; allowedRootFields?: readonly string[] },
): GatewayError {
  const described = error.issues.map((i) => describeIssue(i, input, opts.allowedRootFields));
  const parts = described.map((d) => (d.at === '' ? d.message : `${d.at}: ${d.message}`));
  const first = described[0];
  const details: Record<string, unknown> = {};
  if (first && first.field !== '') details.field = first.field;
  if (described.length > 1) details.issues = described.map(({ field, message }) => ({ field, message }));
  return new GatewayError(400, opts.code, `${opts.what}: ${parts.join('; ')}`, details);
}

// ---- thrown error → response ----------------------------------------------------------------

function isFastifyError(err: unknown): err is FastifyError {
  return err instanceof Error && typeof (err as FastifyError).code === 'string';
}

/** Bodies up to this size are read and discarded after a 413, so the client finishes sending and reads the answer. */
const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

/**
 * Fastify answers a too-large body with `Connection: close` before reading it;
 * a client still writing then sees EPIPE instead of the 413. For bodies of a
 * reasonable size, keep the connection and discard the rest of the body instead.
 */
function drainOversizedBody(request: FastifyRequest, reply: FastifyReply): void {
  const declared = Number(request.headers['content-length'] ?? NaN);
  if (!Number.isFinite(declared) || declared > MAX_DRAIN_BYTES || request.raw.readableEnded) return;
  reply.removeHeader('connection');
  request.raw.resume();
}

/** Maps anything thrown in the request lifecycle to a GatewayError (null: unexpected, answer 500). */
export function toGatewayError(err: unknown, request: FastifyRequest): GatewayError | null {
  if (err instanceof GatewayError) return err;
  if (err instanceof FunctionStoreError) return functionStoreErrorToGatewayError(err);
  if (!isFastifyError(err)) {
    if (err instanceof SyntaxError) return new GatewayError(400, 'INVALID_JSON', `request body is not valid JSON: ${err.message}`);
    return null;
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = request.routeOptions.bodyLimit;
      const hint = (request.routeOptions.config as BodyLimitRouteConfig | undefined)?.bodyLimitHint;
      return new GatewayError(
        413,
        'BODY_TOO_LARGE',
        `request body is larger than the limit of ${limit} bytes${hint ? ` (${hint})` : ''}`,
        { limitBytes: limit },
      );
    }
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new GatewayError(400, 'INVALID_JSON', 'request body is not valid JSON');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new GatewayError(400, 'INVALID_JSON', 'request body is empty; send a JSON object');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new GatewayError(
        415,
        'UNSUPPORTED_MEDIA_TYPE',
        `malformed or unsupported Content-Type header ${JSON.stringify(request.headers['content-type'] ?? '')}; send a valid media type such as application/json`,
      );
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new GatewayError(400, 'INVALID_CONTENT_LENGTH', 'the Content-Length header does not match the body that was sent');
    default:
      break;
  }
  const status = err.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new GatewayError(status, status === 404 ? 'NOT_FOUND' : 'BAD_REQUEST', err.message);
  }
  return null;
}

/** Installs the one error handler and the 404 handler of the whole gateway. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const mapped = toGatewayError(err, request);
    const callId = getInvocationContext(request)?.callId;
    if (mapped) {
      if (mapped.statusCode >= 500) request.log.warn({ err, callId }, mapped.message);
      const body = mapped.toBody();
      if (callId !== undefined && mapped.statusCode >= 500 && body.callId === undefined) body.callId = callId;
      if (mapped.statusCode === 413) drainOversizedBody(request, reply);
      return reply.code(mapped.statusCode).send(body);
    }
    request.log.error({ err, callId }, 'unexpected error');
    const body: ErrorBody = { error: 'internal error', code: 'INTERNAL', requestId: request.id };
    if (callId !== undefined) body.callId = callId;
    return reply.code(500).send(body);
  });

  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0];
    return reply.code(404).send({
      error: `no route for ${request.method} ${path}`,
      code: 'NOT_FOUND',
    } satisfies ErrorBody);
  });
}
