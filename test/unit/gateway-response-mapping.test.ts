import { describe, expect, it } from 'vitest';
import type { InvokeResult, PlatformErrorCode } from '../../contracts/bus.js';
import {
  mapInvokeResult,
  PLATFORM_STATUS,
  platformHeaders,
  sanitizeHeaders,
} from '../../lib/response-mapping.js';

const base = { callId: 'c-1', durationMs: 5, logs: [{ stream: 'stdout' as const, line: 'secret log' }] };
const noValue = (): InvokeResult => ({ ...base, outcome: { kind: 'value' } });
const valueOf = (v: unknown): InvokeResult => ({ ...base, outcome: { kind: 'value', value: v } });
const json = (body: Buffer): unknown => JSON.parse(body.toString('utf8'));

describe('mapInvokeResult: returned values', () => {
  it('statusCode + headers + string body', () => {
    const r = mapInvokeResult(
      valueOf({
        statusCode: 201,
        headers: { 'X-Custom': 'yes', 'Content-Type': 'text/html', 'X-Num': 7, 'X-Obj': { a: 1 }, 'X-Null': null },
        body: '<p>hi</p>',
      }),
    );
    expect(r.statusCode).toBe(201);
    expect(r.headers).toEqual({ 'x-custom': 'yes', 'content-type': 'text/html', 'x-num': '7' });
    expect(r.body.toString()).toBe('<p>hi</p>');
  });

  it('string body without a content type is text/plain', () => {
    const r = mapInvokeResult(valueOf({ statusCode: 200, body: 'plain' }));
    expect(r.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(r.body.toString()).toBe('plain');
  });

  it('drops hop-by-hop, framing, platform and malformed headers', () => {
    expect(
      sanitizeHeaders({
        'Transfer-Encoding': 'chunked',
        Connection: 'close',
        'Content-Length': '999',
        'Keep-Alive': 'x',
        Upgrade: 'h2c',
        'X-Call-Id': 'forged',
        'X-Duration-Seconds': '0',
        'X-Mayfly-Start': 'warm',
        'bad name': 'x',
        'x-injected': 'a\r\nSet-Cookie: evil=1',
        'x-ok': 'fine',
      }),
    ).toEqual({ 'x-ok': 'fine' });
    expect(sanitizeHeaders(['x'])).toEqual({});
    expect(sanitizeHeaders('x')).toEqual({});
  });

  it('object and array bodies become JSON with application/json unless set', () => {
    const r = mapInvokeResult(valueOf({ statusCode: 202, body: { ok: true } }));
    expect(r.statusCode).toBe(202);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(json(r.body)).toEqual({ ok: true });

    const r2 = mapInvokeResult(valueOf({ statusCode: 200, headers: { 'content-type': 'application/vnd.x+json' }, body: [1, 2] }));
    expect(r2.headers['content-type']).toBe('application/vnd.x+json');
    expect(json(r2.body)).toEqual([1, 2]);
  });

  it('base64 body is decoded', () => {
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    const r = mapInvokeResult(
      valueOf({ statusCode: 200, headers: { 'content-type': 'image/png' }, body: bytes.toString('base64'), isBase64Encoded: true }),
    );
    expect(r.body.equals(bytes)).toBe(true);
    expect(r.headers['content-type']).toBe('image/png');
    const r2 = mapInvokeResult(valueOf({ statusCode: 200, body: bytes.toString('base64'), isBase64Encoded: true }));
    expect(r2.headers['content-type']).toBe('application/octet-stream');
  });

  it('absent or null body → empty; 204/304 never have a body', () => {
    expect(mapInvokeResult(valueOf({ statusCode: 200 })).body.length).toBe(0);
    expect(mapInvokeResult(valueOf({ statusCode: 200, body: null })).body.length).toBe(0);
    const r = mapInvokeResult(valueOf({ statusCode: 204, body: 'ignored' }));
    expect(r.statusCode).toBe(204);
    expect(r.body.length).toBe(0);
  });

  it('plain values → 200 JSON (strings too)', () => {
    for (const v of [{ a: 1 }, [1, 'x'], 'hello', 42, true, null, { statusCode: 'nope' }, { statusCode: 700 }, { statusCode: 200.5 }]) {
      const r = mapInvokeResult(valueOf(v));
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
      expect(json(r.body)).toEqual(v);
    }
  });

  it('undefined (value absent) → 204 empty', () => {
    const r = mapInvokeResult(noValue());
    expect(r).toEqual({ statusCode: 204, headers: {}, body: Buffer.alloc(0) });
    expect(mapInvokeResult(valueOf(undefined)).statusCode).toBe(204);
  });

  it('1xx is not a final status: 502 INVALID_RESPONSE', () => {
    const r = mapInvokeResult(valueOf({ statusCode: 101, body: 'x' }));
    expect(r.statusCode).toBe(502);
    expect(json(r.body)).toMatchObject({ code: 'INVALID_RESPONSE', callId: 'c-1' });
  });

  it('never puts logs in the response', () => {
    expect(mapInvokeResult(valueOf({ a: 1 })).body.toString()).not.toContain('secret log');
  });
});

describe('mapInvokeResult: errors', () => {
  it('handler error → 500 with message, name and callId', () => {
    const r = mapInvokeResult({ ...base, outcome: { kind: 'error', error: { name: 'TypeError', message: 'x is not a function', stack: 'at …' } } });
    expect(r.statusCode).toBe(500);
    expect(json(r.body)).toEqual({ error: 'x is not a function', code: 'FUNCTION_ERROR', name: 'TypeError', callId: 'c-1' });
  });

  const expected: Record<PlatformErrorCode, number> = {
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
  for (const [code, status] of Object.entries(expected) as [PlatformErrorCode, number][]) {
    it(`platform ${code} → ${status}`, () => {
      const r = mapInvokeResult({ ...base, outcome: { kind: 'platform', code, message: `because ${code}` } });
      expect(r.statusCode).toBe(status);
      expect(json(r.body)).toEqual({ error: `because ${code}`, code, callId: 'c-1' });
    });
  }
  it('covers every platform code', () => {
    expect(PLATFORM_STATUS).toEqual(expected);
  });
});

describe('platformHeaders', () => {
  it('formats the duration with 3 decimals and omits what is absent', () => {
    expect(platformHeaders({ callId: 'a', durationSeconds: 1.23456 })).toEqual({ 'x-call-id': 'a', 'x-duration-seconds': '1.235' });
    expect(platformHeaders({ callId: 'a', durationSeconds: 0, start: 'warm', hostId: 'h1' })).toEqual({
      'x-call-id': 'a',
      'x-duration-seconds': '0.000',
      'x-mayfly-start': 'warm',
      'x-mayfly-host': 'h1',
    });
  });
});
