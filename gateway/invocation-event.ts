/**
 * HTTP request → InvocationEvent (contracts/guest-protocol.ts), as a pure function.
 *
 * - path: the raw (still percent-encoded) path after `/function/<name>`, "/" when none,
 *   without the query string.
 * - query: parsed from the raw query string; a repeated key gives an array.
 * - headers: lower-cased names, string values (arrays joined with ", "); `x-call-id` is
 *   set to the call id the gateway chose, so the function sees it.
 * - body: UTF-8 text when the content type is textual (or absent) and the bytes are valid
 *   UTF-8; otherwise base64 with isBase64Encoded = true.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { invocationEventSchema, type InvocationEvent } from '../contracts/guest-protocol.js';
import { withoutConsoleCredentials } from './console/session.js';

export const INVOKE_PREFIX = '/function/';
const ASYNC_INVOKE_PREFIX = '/async-function/';

/** Longest `path` an InvocationEvent may carry (414 above it). */
export const MAX_PATH_CHARS = invocationEventSchema.shape.path.maxLength ?? 4096;

export interface RawInvocationRequest {
  method: string;
  /** The request target as received, e.g. "/function/echo/a/b?x=1&x=2". */
  url: string;
  headers: IncomingHttpHeaders;
  /** Undefined when the request had no body. */
  body: Buffer | undefined;
  callId: string;
}

/** "/" + what follows `/function/<name>` in the raw URL, without the query string. */
export function invocationPath(url: string): string {
  const q = url.indexOf('?');
  const rawPath = q < 0 ? url : url.slice(0, q);
  const prefix = [INVOKE_PREFIX, ASYNC_INVOKE_PREFIX].find((p) => rawPath.startsWith(p));
  const afterPrefix = prefix ? rawPath.slice(prefix.length) : rawPath.replace(/^\/+/, '');
  const slash = afterPrefix.indexOf('/');
  return slash < 0 ? '/' : afterPrefix.slice(slash);
}

export function parseQuery(url: string): Record<string, string | string[]> {
  const q = url.indexOf('?');
  const out = new Map<string, string | string[]>();
  if (q < 0) return {};
  for (const [k, v] of new URLSearchParams(url.slice(q + 1))) {
    const prev = out.get(k);
    if (prev === undefined) out.set(k, v);
    else if (Array.isArray(prev)) prev.push(v);
    else out.set(k, [prev, v]);
  }
  // fromEntries defines own properties: a "__proto__" key stays a plain key.
  return Object.fromEntries(out);
}

export function flattenHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const entries: [string, string][] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    entries.push([name.toLowerCase(), Array.isArray(value) ? value.join(', ') : String(value)]);
  }
  return Object.fromEntries(entries);
}

/** Content types whose bodies are passed to the function as text. No content type counts as text. */
export function isTextualContentType(contentType: string | undefined): boolean {
  if (contentType === undefined) return true;
  const mediaType = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  if (mediaType === '') return true;
  if (mediaType.startsWith('text/')) return true;
  return (
    mediaType === 'application/json' ||
    mediaType === 'application/x-www-form-urlencoded' ||
    mediaType === 'application/xml' ||
    /^application\/[^/]+\+(json|xml)$/.test(mediaType)
  );
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}

export function encodeBody(body: Buffer | undefined, contentType: string | undefined): { body: string; isBase64Encoded: boolean } {
  if (body === undefined || body.length === 0) return { body: '', isBase64Encoded: false };
  if (isTextualContentType(contentType)) {
    const text = decodeUtf8(body);
    if (text !== null) return { body: text, isBase64Encoded: false };
  }
  return { body: body.toString('base64'), isBase64Encoded: true };
}

export function buildInvocationEvent(req: RawInvocationRequest): InvocationEvent {
  const headers = withoutConsoleCredentials(flattenHeaders(req.headers));
  headers['x-call-id'] = req.callId;
  const ct = req.headers['content-type'];
  return {
    method: req.method.toUpperCase(),
    path: invocationPath(req.url),
    query: parseQuery(req.url),
    headers,
    ...encodeBody(req.body, typeof ct === 'string' ? ct : undefined),
  };
}
