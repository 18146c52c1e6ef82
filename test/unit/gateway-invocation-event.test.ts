import { describe, expect, it } from 'vitest';
import { invocationEventSchema } from '../../contracts/guest-protocol.js';
import {
  buildInvocationEvent,
  encodeBody,
  invocationPath,
  isTextualContentType,
  parseQuery,
} from '../../gateway/invocation-event.js';

describe('invocation event', () => {
  it('path is what follows the name, "/" when none, without the query', () => {
    expect(invocationPath('/function/echo')).toBe('/');
    expect(invocationPath('/function/echo/')).toBe('/');
    expect(invocationPath('/function/echo?x=1')).toBe('/');
    expect(invocationPath('/function/echo/a/b?x=1')).toBe('/a/b');
    expect(invocationPath('/function/echo/a%20b/')).toBe('/a%20b/');
  });

  it('query: repeated keys become arrays, values are decoded', () => {
    expect(parseQuery('/function/x')).toEqual({});
    expect(parseQuery('/function/x?a=1&b=two+words&a=2&a=3&c=%2F&flag')).toEqual({
      a: ['1', '2', '3'],
      b: 'two words',
      c: '/',
      flag: '',
    });
    const q = parseQuery('/function/x?__proto__=p&constructor=c');
    expect(Object.getPrototypeOf(q)).toBe(Object.prototype);
    expect(Object.keys(q)).toEqual(['__proto__', 'constructor']);
  });

  it('textual content types', () => {
    for (const t of [undefined, '', 'text/plain', 'text/csv; charset=utf-8', 'application/json', 'Application/JSON; charset=UTF-8',
      'application/vnd.api+json', 'application/x-www-form-urlencoded', 'application/xml', 'application/atom+xml']) {
      expect(isTextualContentType(t), String(t)).toBe(true);
    }
    for (const t of ['application/octet-stream', 'image/png', 'multipart/form-data; boundary=x', 'application/pdf']) {
      expect(isTextualContentType(t), t).toBe(false);
    }
  });

  it('bodies: text as UTF-8, binary (or invalid UTF-8) as base64', () => {
    expect(encodeBody(undefined, 'application/json')).toEqual({ body: '', isBase64Encoded: false });
    expect(encodeBody(Buffer.from('{"a":"ü"}'), 'application/json')).toEqual({ body: '{"a":"ü"}', isBase64Encoded: false });
    const bin = Buffer.from([0xff, 0x00, 0x10]);
    expect(encodeBody(bin, 'application/octet-stream')).toEqual({ body: bin.toString('base64'), isBase64Encoded: true });
    expect(encodeBody(bin, 'text/plain')).toEqual({ body: bin.toString('base64'), isBase64Encoded: true });
    const bom = Buffer.from([0xef, 0xbb, 0xbf, 0x41]);
    expect(encodeBody(bom, 'text/plain').body).toBe('\ufeffA');
  });

  it('builds a schema-valid event with lower-cased, flattened headers and the call id', () => {
    const ev = buildInvocationEvent({
      method: 'post',
      url: '/function/echo/items/7?tag=a&tag=b',
      headers: { 'content-type': 'application/json', 'x-multi': ['a', 'b'], 'set-cookie': ['c=1', 'd=2'] },
      body: Buffer.from('{"n":1}'),
      callId: 'call-1',
    });
    expect(ev).toEqual({
      method: 'POST',
      path: '/items/7',
      query: { tag: ['a', 'b'] },
      headers: { 'content-type': 'application/json', 'x-multi': 'a, b', 'set-cookie': 'c=1, d=2', 'x-call-id': 'call-1' },
      body: '{"n":1}',
      isBase64Encoded: false,
    });
    expect(invocationEventSchema.safeParse(ev).success).toBe(true);
  });
});
