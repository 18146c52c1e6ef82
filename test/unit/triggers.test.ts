/**
 * Trigger annotations, events and call ids (lib/trigger-annotations.ts,
 * scheduler/triggers/event.ts, gateway/handlers/triggers.ts): pure functions.
 */
import { describe, expect, it } from 'vitest';
import {
  checkTriggerAnnotations,
  isValidSubject,
  minimalSubjects,
  nextRuns,
  parseSchedule,
  subjectCovers,
  subjectMatches,
  topicSubjects,
  TriggerAnnotationError,
} from '../../lib/trigger-annotations.js';
import { captureSubjects, IDLE_SUBJECT } from '../../lib/trigger-stream.js';
import { messageCallId, messageEvent, tickCallId, tickEvent } from '../../scheduler/triggers/event.js';
import { scheduleStatus, triggerList } from '../../gateway/handlers/triggers.js';
import { parseDeployBody } from '../../gateway/validation.js';
import { GatewayError } from '../../gateway/errors.js';
import type { FunctionRecord } from '../../contracts/functions.js';

function annotationError(a: Record<string, string>): string {
  try {
    checkTriggerAnnotations(a);
  } catch (err) {
    expect(err).toBeInstanceOf(TriggerAnnotationError);
    return (err as TriggerAnnotationError).annotation;
  }
  throw new Error(`accepted ${JSON.stringify(a)}`);
}

describe('subjects', () => {
  it('validates NATS subjects', () => {
    for (const s of ['a', 'a.b', 'a.*', 'a.>', 'a.*.c', 'orders-eu.created_1']) expect(isValidSubject(s), s).toBe(true);
    for (const s of ['', 'a..b', '.a', 'a.', 'a b', 'a.>.c', 'a.b*', 'a.>x', 'a\tb']) expect(isValidSubject(s), s).toBe(false);
  });

  it('matches and covers like nats-server', () => {
    expect(subjectMatches('orders.*.created', 'orders.eu.created')).toBe(true);
    expect(subjectMatches('orders.*.created', 'orders.eu.x.created')).toBe(false);
    expect(subjectMatches('audit.>', 'audit.a.b.c')).toBe(true);
    expect(subjectMatches('audit.>', 'audit')).toBe(false);
    expect(subjectMatches('a.b', 'a.b')).toBe(true);
    expect(subjectMatches('a.b', 'a.c')).toBe(false);
    expect(subjectCovers('a.>', 'a.*')).toBe(true);
    expect(subjectCovers('a.*', 'a.>')).toBe(false);
    expect(subjectCovers('a.*', 'a.b')).toBe(true);
    expect(subjectCovers('a.b', 'a.*')).toBe(false);
    expect(minimalSubjects(['a.b', 'a.>', 'a.*', 'c.d', 'c.d'])).toEqual(['a.>', 'c.d']);
  });

  it('parses topic: comma-separated, trimmed, cron-function left out', () => {
    expect(topicSubjects({ topic: ' orders.created , orders.*,cron-function' })).toEqual(['orders.created', 'orders.*']);
    expect(topicSubjects({})).toEqual([]);
    expect(topicSubjects({ topic: 'cron-function' })).toEqual([]);
  });

  it('rejects bad topics naming the annotation', () => {
    for (const topic of ['a..b', 'a,,b', '*.x', '>', 'mayfly.async.submit', '$JS.API.>', '_INBOX.x', 'a b']) {
      expect(annotationError({ topic }), topic).toBe('topic');
    }
    expect(() => topicSubjects({ topic: Array.from({ length: 33 }, (_, i) => `s.${i}`).join(',') })).toThrow(/at most 32/);
  });

  it('the capture stream takes the minimal subject set, or an idle subject', () => {
    expect(captureSubjects([{ annotations: { topic: 'a.*' } }, { annotations: { topic: 'a.b,c' } }, { annotations: { topic: 'bad..x' } }])).toEqual(['a.*', 'c']);
    expect(captureSubjects([{ annotations: {} }])).toEqual([IDLE_SUBJECT]);
  });
});

describe('schedules', () => {
  const at = Date.parse('2026-12-01T10:07:30.000Z');

  it('cron in UTC, 5 fields, nicknames, a 6th seconds field', () => {
    const every5 = parseSchedule({ schedule: '*/5 * * * *' })!;
    expect(nextRuns(every5, 3, at).map((t) => new Date(t).toISOString())).toEqual([
      '2026-12-01T10:10:00.000Z',
      '2026-12-01T10:15:00.000Z',
      '2026-12-01T10:20:00.000Z',
    ]);
    expect(new Date(parseSchedule({ schedule: '@hourly' })!.next(at)!).toISOString()).toBe('2026-12-01T11:00:00.000Z');
    expect(new Date(parseSchedule({ schedule: '0 3 * * 1' })!.next(at)!).toISOString()).toBe('2026-12-07T03:00:00.000Z');
    expect(new Date(parseSchedule({ schedule: '*/10 * * * * *' })!.next(at)!).toISOString()).toBe('2026-12-01T10:07:40.000Z');
  });

  it('@every: ticks at multiples of the interval since the epoch (the same on every replica)', () => {
    const s = parseSchedule({ schedule: '@every 30s' })!;
    expect(s.next(at)).toBe(Date.parse('2026-12-01T10:08:00.000Z'));
    expect(s.next(Date.parse('2026-12-01T10:08:00.000Z'))).toBe(Date.parse('2026-12-01T10:08:30.000Z'));
    expect(parseSchedule({ schedule: '@every 1s' })!.next(1001)).toBe(2000);
    expect(parseSchedule({ schedule: '@every 2m' })!.next(0)).toBe(120_000);
  });

  it('rejects bad schedules naming the annotation, and a schedule without topic cron-function', () => {
    for (const schedule of ['61 * * * *', '* * *', 'every minute', '@every 0s', '@every 500ms', '@every 5 parsecs', '@sometimes']) {
      expect(annotationError({ topic: 'cron-function', schedule }), schedule).toBe('schedule');
    }
    expect(annotationError({ schedule: '* * * * *' })).toBe('topic');
    expect(annotationError({ topic: 'cron-function', schedule: '* * * * *', 'com.mayfly.schedule_catchup': 'yes' })).toBe('com.mayfly.schedule_catchup');
    expect(annotationError({ topic: 'a', 'com.mayfly.reply_subject': 'mayfly.async.submit' })).toBe('com.mayfly.reply_subject');
    expect(() => checkTriggerAnnotations({ topic: 'cron-function, orders.in', schedule: '*/5 * * * *', 'com.mayfly.reply_subject': 'out.x' })).not.toThrow();
  });

  it('a deploy with a bad annotation is a 400 INVALID_ANNOTATION naming it', () => {
    let err: unknown;
    try {
      parseDeployBody({ service: 'f', code: 'x', annotations: { topic: 'cron-function', schedule: '99 * * * *' } }, 1 << 20);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).statusCode).toBe(400);
    expect((err as GatewayError).toBody()).toMatchObject({ code: 'INVALID_ANNOTATION', field: 'annotations.schedule' });
    expect((err as GatewayError).message).toContain('annotation "schedule"');
  });
});

describe('events and call ids', () => {
  it('a binary message becomes a base64 body; headers lower-cased and joined; Nats-* left out', () => {
    const data = new Uint8Array([0, 255, 1, 128]);
    const e = messageEvent(
      { subject: 'orders.eu', data, headers: [['X-Tenant', ['acme']], ['X-Multi', ['a', 'b']], ['Nats-Msg-Id', ['m1']]], msgId: 'm1', seq: 7 },
      'f.m-m1',
    );
    expect(e).toMatchObject({ method: 'POST', path: '/', topic: 'orders.eu', isBase64Encoded: true, body: Buffer.from(data).toString('base64') });
    expect(e.headers).toEqual({ 'x-tenant': 'acme', 'x-multi': 'a, b', 'x-topic': 'orders.eu', 'x-nats-msg-id': 'm1', 'x-mayfly-trigger-seq': '7', 'x-call-id': 'f.m-m1' });
  });

  it('UTF-8 text stays text unless its content-type is binary', () => {
    const text = new TextEncoder().encode('héllo');
    expect(messageEvent({ subject: 's', data: text, headers: [], seq: 1 }, 'c')).toMatchObject({ body: 'héllo', isBase64Encoded: false });
    expect(messageEvent({ subject: 's', data: text, headers: [['Content-Type', ['application/octet-stream']]], seq: 1 }, 'c').isBase64Encoded).toBe(true);
    expect(messageEvent({ subject: 's', data: new Uint8Array(), headers: [], seq: 1 }, 'c')).toMatchObject({ body: '', isBase64Encoded: false });
  });

  it('call ids: per function and Nats-Msg-Id, hashed when unsafe, else by stream sequence; ticks apart; all within 128 chars', () => {
    expect(messageCallId('f', { msgId: 'order-1', seq: 3 }, 'e')).toBe('f.m-order-1');
    expect(messageCallId('f', { seq: 3 }, 'e')).toBe('f.se-3');
    const hashed = messageCallId('f', { msgId: 'a/b c', seq: 3 }, 'e');
    expect(hashed).toMatch(/^f\.h-[0-9a-f]{40}$/);
    expect(messageCallId('f', { msgId: 'a/b c', seq: 9 }, 'e')).toBe(hashed);
    const long = 'x'.repeat(63);
    expect(messageCallId(long, { msgId: 'y'.repeat(62), seq: 1 }, 'e').length).toBeLessThanOrEqual(128);
    expect(messageCallId(long, { msgId: 'y'.repeat(63), seq: 1 }, 'e')).toMatch(/\.h-/);
    expect(tickCallId('f', 1000)).toBe('f.tick-1000');
    const t = tickEvent('f', '@every 1s', 1000, 'f.tick-1000');
    expect(t.headers).toMatchObject({ 'x-topic': 'cron-function', 'x-mayfly-tick': '1970-01-01T00:00:01.000Z', 'x-mayfly-schedule': '@every 1s' });
    expect(JSON.parse(t.body)).toEqual({ function: 'f', schedule: '@every 1s', tick: '1970-01-01T00:00:01.000Z' });
  });
});

describe('GET /system/triggers', () => {
  const fn = (name: string, annotations: Record<string, string>): FunctionRecord => ({
    name, runtime: 'node', handler: 'handler', codeHash: 'h', codeBytes: 1, envVars: {}, memoryMiB: 128, timeoutMs: 1000,
    isolation: 'per-function', image: 'mayfly/node', labels: {}, annotations, secrets: [], version: 1, createdAt: '', updatedAt: '',
  });

  it('lists subjects with their functions and schedules with next runs', () => {
    const now = Date.parse('2026-12-01T10:07:30.000Z');
    const list = triggerList([fn('b', { topic: 'orders.*' }), fn('a', { topic: 'orders.*,x' }), fn('c', { topic: 'cron-function', schedule: '@every 1m' }), fn('d', {})], now);
    expect(list.subjects).toEqual([
      { subject: 'orders.*', functions: ['a', 'b'] },
      { subject: 'x', functions: ['a'] },
    ]);
    expect(list.schedules).toEqual([{ function: 'c', schedule: '@every 1m', catchUp: false, nextRuns: ['10:08', '10:09', '10:10', '10:11', '10:12'].map((m) => `2026-12-01T${m}:00.000Z`) }]);
    expect(scheduleStatus(fn('d', {}))).toBeUndefined();
  });
});
