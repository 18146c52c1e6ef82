/**
 * A captured NATS message or a schedule tick → the InvocationEvent a function
 * receives, and the call id of that call. Pure functions.
 *
 * Message: POST "/", body as is (UTF-8 text when it is valid UTF-8 and its
 * content-type, if any, is textual; base64 otherwise, so any bytes arrive
 * intact), NATS headers as lower-case HTTP-style headers (repeated values
 * joined with ", "; JetStream's own `Nats-*` headers left out), `x-topic` =
 * the subject, `x-nats-msg-id` = its Nats-Msg-Id, and `topic` in the event.
 */
import { createHash } from 'node:crypto';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import { CRON_TOPIC, TRIGGER_HEADERS } from '../../contracts/triggers.js';

export interface CapturedMessage {
  subject: string;
  data: Uint8Array;
  /** Header name → values, as NATS delivered them. */
  headers: Iterable<[string, string[]]>;
  /** Nats-Msg-Id, when the publisher set one. */
  msgId?: string;
  /** Stream sequence. */
  seq: number;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function isTextual(contentType: string | undefined): boolean {
  if (contentType === undefined) return true;
  const t = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  return t === '' || t.startsWith('text/') || t === 'application/json' || t === 'application/xml' || /^application\/[^/]+\+(json|xml)$/.test(t);
}

function encodeBody(data: Uint8Array, contentType: string | undefined): { body: string; isBase64Encoded: boolean } {
  if (data.length === 0) return { body: '', isBase64Encoded: false };
  if (isTextual(contentType)) {
    try {
      return { body: strictUtf8.decode(data), isBase64Encoded: false };
    } catch {
      // not UTF-8: base64 below
    }
  }
  return { body: Buffer.from(data).toString('base64'), isBase64Encoded: true };
}

export function messageEvent(m: CapturedMessage, callId: string): InvocationEvent {
  const headers: Record<string, string> = {};
  for (const [name, values] of m.headers) {
    const lower = name.toLowerCase();
    if (lower.startsWith('nats-')) continue;
    headers[lower] = values.join(', ');
  }
  headers[TRIGGER_HEADERS.topic] = m.subject;
  headers[TRIGGER_HEADERS.sequence] = String(m.seq);
  if (m.msgId !== undefined) headers[TRIGGER_HEADERS.msgId] = m.msgId;
  headers['x-call-id'] = callId;
  return { method: 'POST', path: '/', query: {}, headers, ...encodeBody(m.data, headers['content-type']), topic: m.subject };
}

export function tickEvent(fn: string, schedule: string, tickMs: number, callId: string): InvocationEvent {
  const tick = new Date(tickMs).toISOString();
  return {
    method: 'POST',
    path: '/',
    query: {},
    headers: {
      'content-type': 'application/json',
      [TRIGGER_HEADERS.topic]: CRON_TOPIC,
      [TRIGGER_HEADERS.tick]: tick,
      [TRIGGER_HEADERS.schedule]: schedule,
      'x-call-id': callId,
    },
    body: JSON.stringify({ function: fn, schedule, tick }),
    isBase64Encoded: false,
    topic: CRON_TOPIC,
  };
}

const SAFE_ID = /^[A-Za-z0-9._-]{1,62}$/;

/**
 * The call id of a message's call to one function: `<fn>.m-<Nats-Msg-Id>` (so
 * a repeated id runs once per function), `<fn>.h-<sha256 of the id>` when the
 * id is longer or has other characters, else `<fn>.s<stream created>-<sequence>`.
 * Ticks are `<fn>.tick-<ms>`: the prefixes keep the two apart.
 */
export function messageCallId(fn: string, m: Pick<CapturedMessage, 'msgId' | 'seq'>, streamEpoch: string): string {
  if (m.msgId !== undefined && m.msgId !== '') {
    if (SAFE_ID.test(m.msgId)) return `${fn}.m-${m.msgId}`;
    return `${fn}.h-${createHash('sha256').update(m.msgId).digest('hex').slice(0, 40)}`;
  }
  return `${fn}.s${streamEpoch}-${m.seq}`;
}

/** The call id of one tick: the same on every replica, so the tick runs once. */
export function tickCallId(fn: string, tickMs: number): string {
  return `${fn}.tick-${tickMs}`;
}
