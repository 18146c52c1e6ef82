/**
 * Function logs (lib/function-logs.ts) and GET /system/logs: the NDJSON lines
 * OpenFaaS clients read, built from call records.
 */
import { describe, expect, it } from 'vitest';
import type { CallRecord } from '../../contracts/bus.js';
import type { FunctionRecord } from '../../contracts/functions.js';
import { buildGateway } from '../../gateway/app.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import {
  logsFromRecords,
  MAX_LOG_LINES,
  parseLogsQuery,
  parseSince,
  recordLogEntries,
  selectLogEntries,
  toNdjson,
  type FunctionLogEntry,
} from '../../lib/function-logs.js';

function rec(callId: string, fn: string, endedAt: string | undefined, lines: string[], extra: Partial<CallRecord> = {}): CallRecord {
  return {
    callId,
    function: fn,
    mode: 'sync',
    status: 'succeeded',
    attempts: 1,
    logs: lines.map((line, i) => ({ stream: i % 2 ? 'stderr' : 'stdout', line })),
    queuedAt: '2024-05-01T10:00:00.000Z',
    startedAt: '2024-05-01T10:00:00.500Z',
    ...(endedAt ? { endedAt } : {}),
    hostId: 'w1',
    ...extra,
  };
}

describe('recordLogEntries', () => {
  it('stamps every line of a call with its end time and host', () => {
    expect(recordLogEntries(rec('c1', 'hello', '2024-05-01T10:00:01.000Z', ['a', 'b']))).toEqual([
      { name: 'hello', instance: 'w1', timestamp: '2024-05-01T10:00:01.000Z', text: 'a', callId: 'c1', stream: 'stdout' },
      { name: 'hello', instance: 'w1', timestamp: '2024-05-01T10:00:01.000Z', text: 'b', callId: 'c1', stream: 'stderr' },
    ]);
  });

  it('falls back to the start or queue time and an unknown host', () => {
    const [e] = recordLogEntries(rec('c', 'f', undefined, ['x'], { hostId: undefined, startedAt: undefined }));
    expect(e).toMatchObject({ timestamp: '2024-05-01T10:00:00.000Z', instance: 'unknown' });
  });
});

describe('selectLogEntries', () => {
  const entries: FunctionLogEntry[] = [
    ...recordLogEntries(rec('late', 'f', '2024-05-01T10:00:03.000Z', ['l1', 'l2'])),
    ...recordLogEntries(rec('early', 'f', '2024-05-01T10:00:01.000Z', ['e1', 'e2', 'e3'])),
  ];

  it('orders oldest first, keeping the order of lines within a call', () => {
    expect(selectLogEntries(entries, { tail: -1 }).map((e) => e.text)).toEqual(['e1', 'e2', 'e3', 'l1', 'l2']);
  });

  it('keeps the last `tail` lines', () => {
    expect(selectLogEntries(entries, { tail: 3 }).map((e) => e.text)).toEqual(['e3', 'l1', 'l2']);
    expect(selectLogEntries(entries, { tail: 0 })).toEqual([]);
    expect(selectLogEntries(entries, { tail: 100 }).length).toBe(5);
  });

  it('keeps lines at or after `since`', () => {
    expect(selectLogEntries(entries, { tail: -1, since: new Date('2024-05-01T10:00:02Z') }).map((e) => e.text)).toEqual(['l1', 'l2']);
    expect(selectLogEntries(entries, { tail: -1, since: new Date('2024-05-01T10:00:03Z') }).length).toBe(2);
    expect(selectLogEntries(entries, { tail: -1, since: new Date('2024-05-01T10:00:04Z') })).toEqual([]);
  });

  it('never returns more than MAX_LOG_LINES', () => {
    const many = Array.from({ length: MAX_LOG_LINES + 5 }, (_, i) => ({ ...entries[0]!, text: String(i) }));
    const out = selectLogEntries(many, { tail: -1 });
    expect(out.length).toBe(MAX_LOG_LINES);
    expect(out.at(-1)!.text).toBe(String(MAX_LOG_LINES + 4));
  });
});

describe('toNdjson', () => {
  it('writes one JSON object per line, OpenFaaS fields first', () => {
    const text = toNdjson(recordLogEntries(rec('c1', 'hello', '2024-05-01T10:00:01.000Z', ['say "hi"\tthere', 'two'])));
    const lines = text.split('\n');
    expect(lines.length).toBe(3);
    expect(lines[2]).toBe('');
    expect(Object.keys(JSON.parse(lines[0]!) as object)).toEqual(['name', 'instance', 'timestamp', 'text', 'callId', 'stream']);
    expect(JSON.parse(lines[0]!)).toMatchObject({ text: 'say "hi"\tthere' });
    expect(toNdjson([])).toBe('');
  });
});

describe('parseSince and parseLogsQuery', () => {
  const now = Date.parse('2024-05-01T12:00:00Z');

  it('reads RFC 3339 times and durations back from now', () => {
    expect(parseSince('2024-05-01T10:00:00Z', now)!.toISOString()).toBe('2024-05-01T10:00:00.000Z');
    expect(parseSince('2024-05-01T10:00:00.123+02:00', now)!.toISOString()).toBe('2024-05-01T08:00:00.123Z');
    expect(parseSince('10m', now)!.toISOString()).toBe('2024-05-01T11:50:00.000Z');
    expect(parseSince('1.5h', now)!.toISOString()).toBe('2024-05-01T10:30:00.000Z');
    expect(parseSince('500ms', now)!.getTime()).toBe(now - 500);
    expect(parseSince('yesterday', now)).toBeNull();
    expect(parseSince('2024-13-45T99:00:00Z', now)).toBeNull();
    expect(parseSince('12', now)).toBeNull();
  });

  it('validates the query', () => {
    expect(parseLogsQuery({ name: 'hello' }, now)).toEqual({ ok: true, query: { name: 'hello', tail: -1 } });
    expect(parseLogsQuery({ name: 'hello', tail: '20', since: '1h', follow: 'true' }, now)).toEqual({
      ok: true,
      query: { name: 'hello', tail: 20, since: new Date(now - 3_600_000) },
    });
    expect(parseLogsQuery({}, now)).toMatchObject({ ok: false, field: 'name' });
    expect(parseLogsQuery({ name: 'Bad_Name' }, now)).toMatchObject({ ok: false, field: 'name' });
    expect(parseLogsQuery({ name: 'f', tail: 'x' }, now)).toMatchObject({ ok: false, field: 'tail' });
    expect(parseLogsQuery({ name: 'f', tail: '-2' }, now)).toMatchObject({ ok: false, field: 'tail' });
    expect(parseLogsQuery({ name: 'f', tail: '1.5' }, now)).toMatchObject({ ok: false, field: 'tail' });
    expect(parseLogsQuery({ name: 'f', since: 'soon' }, now)).toMatchObject({ ok: false, field: 'since' });
    expect(parseLogsQuery({ name: 'f', since: ['1h', '2h'] }, now)).toMatchObject({ ok: false, field: 'since' });
  });
});

describe('logsFromRecords', () => {
  it('keeps only the named function', () => {
    const out = logsFromRecords(
      [rec('a', 'f', '2024-05-01T10:00:02Z', ['fa']), rec('b', 'g', '2024-05-01T10:00:01Z', ['gb']), rec('c', 'f', '2024-05-01T10:00:01Z', ['fc'])],
      { name: 'f', tail: -1 },
    );
    expect(out.map((e) => e.text)).toEqual(['fc', 'fa']);
  });
});

describe('GET /system/logs', () => {
  const fn = { name: 'hello' } as FunctionRecord;
  const records = [rec('c1', 'hello', '2024-05-01T10:00:01.000Z', ['one', 'two']), rec('c2', 'other', '2024-05-01T10:00:02.000Z', ['x'])];

  async function gateway(backend: Partial<GatewayBackend>) {
    const full = {
      getFunction: async (name: string) => (name === 'hello' ? fn : null),
      listCalls: async () => records,
      listFunctions: async () => [fn],
      healthy: () => true,
      ...backend,
    } as unknown as GatewayBackend;
    return buildGateway({ backend: full, maxBodyBytes: 1 << 20, maxCodeBytes: 1 << 20, version: { release: 't', sha: 't' } });
  }

  it('answers NDJSON from listCalls when the backend has no functionLogs', async () => {
    const app = await gateway({});
    const r = await app.inject({ method: 'GET', url: '/system/logs?name=hello&tail=1' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('application/x-ndjson; charset=utf-8');
    expect(r.body.trim().split('\n').map((l) => (JSON.parse(l) as { text: string }).text)).toEqual(['two']);
    await app.close();
  });

  it('uses the backend functionLogs when it has one', async () => {
    const seen: unknown[] = [];
    const app = await gateway({
      functionLogs: async (q) => {
        seen.push(q);
        return recordLogEntries(records[0]!);
      },
    });
    const r = await app.inject({ method: 'GET', url: '/system/logs?name=hello&since=2024-05-01T00:00:00Z' });
    expect(r.body.trim().split('\n').length).toBe(2);
    expect(seen).toEqual([{ name: 'hello', tail: -1, since: new Date('2024-05-01T00:00:00Z') }]);
    await app.close();
  });

  it('400 for a bad query, 404 for an unknown function', async () => {
    const app = await gateway({});
    const bad = await app.inject({ method: 'GET', url: '/system/logs?name=hello&tail=many' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ code: 'INVALID_QUERY', field: 'tail' });
    expect((await app.inject({ method: 'GET', url: '/system/logs' })).statusCode).toBe(400);
    const missing = await app.inject({ method: 'GET', url: '/system/logs?name=nope' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ code: 'FUNCTION_NOT_FOUND' });
    await app.close();
  });
});
