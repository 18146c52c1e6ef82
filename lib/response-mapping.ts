/**
 * InvokeResult → HTTP response, as a pure function (no Fastify in here).
 *
 * outcome "value":
 *   - an object with an integer `statusCode` in 100–599 is an HTTP response (Lambda /
 *     OpenFaaS style): that status, its `headers` (string and number values; hop-by-hop
 *     and malformed ones dropped) and its `body`: a string as is (base64-decoded when
 *     `isBase64Encoded` is true), null/absent → empty, anything else → JSON.
 *     Default content types: text/plain for strings, application/octet-stream for base64,
 *     application/json for JSON. 1xx is not a final HTTP status: answered 502 INVALID_RESPONSE.
 *   - `value` absent (the handler returned undefined) → 204.
 *   - any other value (strings too) → 200, JSON-encoded, application/json.
 * outcome "error" (the handler threw) → 500 `{ error, code: "FUNCTION_ERROR", name, callId }`.
 * outcome "platform" → PLATFORM_STATUS[code], `{ error, code, callId }`.
 *
 * The platform headers (X-Call-Id, X-Duration-Seconds, X-Mayfly-Start, X-Mayfly-Host) are
 * added by the invoke handler on top (platformHeaders); a function cannot override them.
 * Function logs never go into the response.
 */
import type { InvokeResult, PlatformErrorCode } from '../contracts/bus.js';

export interface MappedResponse {
  statusCode: number;
  /** Lower-cased names. */
  headers: Record<string, string>;
  body: Buffer;
}

export const PLATFORM_STATUS: Record<PlatformErrorCode, number> = {
  FUNCTION_TIMEOUT: 504,
  NO_CAPACITY: 503,
  NO_SCHEDULER: 503,
  CODE_UNAVAILABLE: 503,
  INIT_FAILED: 500,
  GUEST_FAULT: 502,
  VM_FAILED: 502,
  INTERNAL: 500,
  HOST_LOST: 502,
};

export const PLATFORM_HEADERS = {
  callId: 'x-call-id',
  duration: 'x-duration-seconds',
  start: 'x-mayfly-start',
  host: 'x-mayfly-host',
} as const;

/** Headers a function may not set: hop-by-hop (RFC 9110 §7.6.1), framing, and the platform's own. */
const FORBIDDEN_HEADERS = new Set<string>([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  ...Object.values(PLATFORM_HEADERS),
]);

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// What Node's http module accepts in a header value (no CR, LF or other control characters).
const INVALID_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

const JSON_TYPE = 'application/json; charset=utf-8';
const TEXT_TYPE = 'text/plain; charset=utf-8';
const BINARY_TYPE = 'application/octet-stream';

function json(statusCode: number, value: unknown, headers: Record<string, string> = {}): MappedResponse {
  return {
    statusCode,
    headers: { 'content-type': JSON_TYPE, ...headers },
    body: Buffer.from(JSON.stringify(value) ?? 'null', 'utf8'),
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isResponseObject(v: unknown): v is Record<string, unknown> & { statusCode: number } {
  return (
    isRecord(v) &&
    typeof v.statusCode === 'number' &&
    Number.isInteger(v.statusCode) &&
    v.statusCode >= 100 &&
    v.statusCode <= 599
  );
}

/** The function's headers that may go on the wire, lower-cased. */
export function sanitizeHeaders(raw: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isRecord(raw)) return out;
  for (const [name, value] of Object.entries(raw)) {
    let v: string;
    if (typeof value === 'string') v = value;
    else if (typeof value === 'number' && Number.isFinite(value)) v = String(value);
    else continue;
    const lower = name.toLowerCase();
    if (!HEADER_NAME.test(name) || FORBIDDEN_HEADERS.has(lower) || INVALID_HEADER_VALUE.test(v)) continue;
    out[lower] = v;
  }
  return out;
}

function mapResponseObject(v: Record<string, unknown> & { statusCode: number }, callId: string): MappedResponse {
  const status = v.statusCode;
  if (status < 200) {
    return json(502, {
      error: `the function returned statusCode ${status}, which is not a final HTTP status; return 200 to 599`,
      code: 'INVALID_RESPONSE',
      callId,
    });
  }
  const headers = sanitizeHeaders(v.headers);
  let body: Buffer;
  let defaultType: string | undefined;
  const b = v.body;
  if (b === undefined || b === null) {
    body = Buffer.alloc(0);
  } else if (typeof b === 'string') {
    if (v.isBase64Encoded === true) {
      body = Buffer.from(b, 'base64');
      defaultType = BINARY_TYPE;
    } else {
      body = Buffer.from(b, 'utf8');
      defaultType = TEXT_TYPE;
    }
  } else {
    body = Buffer.from(JSON.stringify(b) ?? 'null', 'utf8');
    defaultType = JSON_TYPE;
  }
  if (status === 204 || status === 304) body = Buffer.alloc(0);
  else if (defaultType !== undefined && headers['content-type'] === undefined) headers['content-type'] = defaultType;
  return { statusCode: status, headers, body };
}

export function mapInvokeResult(result: InvokeResult): MappedResponse {
  const { outcome, callId } = result;
  switch (outcome.kind) {
    case 'value': {
      if (!('value' in outcome) || outcome.value === undefined) return { statusCode: 204, headers: {}, body: Buffer.alloc(0) };
      const v = outcome.value;
      if (isResponseObject(v)) return mapResponseObject(v, callId);
      return json(200, v);
    }
    case 'error':
      return json(500, { error: outcome.error.message, code: 'FUNCTION_ERROR', name: outcome.error.name, callId });
    case 'platform':
      return json(PLATFORM_STATUS[outcome.code] ?? 500, { error: outcome.message, code: outcome.code, callId });
  }
}

/** The headers every invocation response carries once the function exists. */
export function platformHeaders(p: {
  callId: string;
  durationSeconds: number;
  start?: string;
  hostId?: string;
}): Record<string, string> {
  const h: Record<string, string> = {
    [PLATFORM_HEADERS.callId]: p.callId,
    [PLATFORM_HEADERS.duration]: p.durationSeconds.toFixed(3),
  };
  if (p.start !== undefined) h[PLATFORM_HEADERS.start] = p.start;
  if (p.hostId !== undefined && !INVALID_HEADER_VALUE.test(p.hostId)) h[PLATFORM_HEADERS.host] = p.hostId;
  return h;
}
