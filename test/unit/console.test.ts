/**
 * The web console's server side (gateway/console) through app.inject(): login,
 * the session cookie's flags, CSRF on state-changing requests, the CSP, the
 * built assets; plus the session format and the call-record figures the pages
 * compute. The browser side against the real platform: test/e2e/console.test.ts.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CallRecord } from '../../contracts/bus.js';
import { buildGateway } from '../../gateway/app.js';
import { Authenticator } from '../../gateway/auth.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import { ConsoleSessions, readCookie, SESSION_COOKIE, sessionKeyFrom } from '../../gateway/console/session.js';
import { buildInvocationEvent } from '../../gateway/invocation-event.js';
import { percentile, startRates, statsByFunction } from '../../gateway/console/web/stats.js';
import { HostDirectory } from '../../lib/host-directory.js';
import { parseStartCounters } from '../../lib/worker-scrape.js';

const PASSWORD = 'console-password-123';
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

/** Only what these tests call; everything else fails loudly. */
function fakeBackend(): GatewayBackend & { deleted: string[] } {
  const deleted: string[] = [];
  const impl: Partial<GatewayBackend> = {
    healthy: () => true,
    listFunctions: async () => [],
    getFunction: async () => null,
    deleteFunction: async (name) => {
      deleted.push(name);
      return true;
    },
  };
  return new Proxy(Object.assign(impl, { deleted }), {
    get(target, prop) {
      if (prop in target) return (target as Record<string | symbol, unknown>)[prop];
      return () => {
        throw new Error(`fake backend: ${String(prop)} not expected`);
      };
    },
  }) as GatewayBackend & { deleted: string[] };
}

let app: FastifyInstance;
let backend: ReturnType<typeof fakeBackend>;
let revoked = false;
const sessions = new ConsoleSessions({ key: sessionKeyFrom(randomBytes(32)), ttlMs: 60_000, tokenAlive: async () => !revoked });
const hosts = new HostDirectory(2000);

beforeEach(async () => {
  revoked = false;
  backend = fakeBackend();
  const auth = new Authenticator({
    enabled: true,
    adminUser: 'admin',
    adminPassword: PASSWORD,
    metricsAuth: false,
    sessions,
    tokens: { verify: async (t) => (t === 'mf_good' ? { id: 'tok000000001', name: 'ci', createdAt: '' } : null) },
  });
  app = await buildGateway({ backend, maxBodyBytes: 1 << 20, maxCodeBytes: 1 << 20, version: { release: 't', sha: 't' }, auth, hosts });
});

afterEach(async () => {
  await app.close();
});

async function login(authorization = basic('admin', PASSWORD)): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const res = await app.inject({ method: 'POST', url: '/ui/api/login', headers: { authorization } });
  expect(res.statusCode).toBe(200);
  const setCookie = String(res.headers['set-cookie']);
  return { cookie: setCookie.split(';')[0]!, csrf: res.json<{ csrf: string }>().csrf, setCookie };
}

describe('console login and session', () => {
  it('serves the page with a strict CSP and no inline script', async () => {
    const res = await app.inject({ url: '/ui/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    const csp = String(res.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(res.headers['x-frame-options']).toBe('DENY');
    // every <script> has a src: nothing inline
    expect(res.body.match(/<script[^>]*>/g)).toEqual(['<script type="module" src="/ui/assets/app.js">']);
    expect(res.body).not.toMatch(/ style=|<style/);
  });

  it('answers /ui as /ui/; with authentication off the console needs no login', async () => {
    expect((await app.inject({ url: '/ui' })).statusCode).toBe(200);
    const open = await buildGateway({ backend, maxBodyBytes: 1 << 20, maxCodeBytes: 1 << 20, version: { release: 't', sha: 't' } });
    try {
      expect((await open.inject({ url: '/ui/api/session' })).json()).toEqual({ authEnabled: false, principal: null, csrf: null });
      expect((await open.inject({ method: 'POST', url: '/ui/api/login', headers: { authorization: basic('admin', PASSWORD) } })).json()).toMatchObject({ code: 'AUTH_OFF' });
      expect((await open.inject({ url: '/system/hosts' })).json()).toMatchObject({ code: 'NOT_CONFIGURED' });
    } finally {
      await open.close();
    }
  });

  it('serves the built assets and nothing else', async () => {
    const js = await app.inject({ url: '/ui/assets/app.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect((await app.inject({ url: '/ui/assets/app.css' })).headers['content-type']).toMatch(/^text\/css/);
    expect((await app.inject({ url: '/ui/assets/..%2F..%2Fpackage.json' })).statusCode).toBe(404);
    expect((await app.inject({ url: '/ui/assets/nope.js' })).json()).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('logs in with the admin password; the cookie is HttpOnly and SameSite=Strict', async () => {
    const { setCookie, cookie, csrf } = await login();
    expect(setCookie).toMatch(new RegExp(`^${SESSION_COOKIE}=[^;]+; Path=/; Max-Age=60; HttpOnly; SameSite=Strict$`));
    const s = await app.inject({ url: '/ui/api/session', headers: { cookie } });
    expect(s.json()).toMatchObject({ authEnabled: true, principal: { kind: 'admin', user: 'admin' }, csrf });
    expect(s.headers['cache-control']).toBe('no-store');
    expect((await app.inject({ url: '/system/functions', headers: { cookie } })).statusCode).toBe(200);
  });

  it('refuses wrong credentials with 401 and no cookie; a console request gets no password dialog', async () => {
    const res = await app.inject({ method: 'POST', url: '/ui/api/login', headers: { authorization: basic('admin', 'nope') } });
    expect(res.statusCode).toBe(401);
    expect(res.headers['set-cookie']).toBeUndefined();
    expect((await app.inject({ method: 'POST', url: '/ui/api/login' })).json()).toMatchObject({ code: 'CREDENTIALS_REQUIRED' });
    const quiet = await app.inject({ url: '/system/functions', headers: { 'x-mayfly-console': '1' } });
    expect(quiet.statusCode).toBe(401);
    expect(quiet.headers['www-authenticate']).toBeUndefined();
    expect((await app.inject({ url: '/system/functions' })).headers['www-authenticate']).toBe('Basic realm="mayfly"');
  });

  it('needs the CSRF token on state-changing requests made with the session', async () => {
    const { cookie, csrf } = await login();
    const del = (headers: Record<string, string>) =>
      app.inject({ method: 'DELETE', url: '/system/functions', headers: { 'content-type': 'application/json', ...headers }, payload: { functionName: 'f' } });
    const none = await del({ cookie });
    expect(none.statusCode).toBe(403);
    expect(none.json()).toMatchObject({ code: 'CSRF_INVALID' });
    expect((await del({ cookie, 'x-csrf-token': csrf.slice(0, -2) + 'xx' })).statusCode).toBe(403);
    // another session's token does not fit this session
    expect((await del({ cookie, 'x-csrf-token': (await login()).csrf })).statusCode).toBe(403);
    expect(backend.deleted).toEqual([]);
    expect((await del({ cookie, 'x-csrf-token': csrf })).statusCode).toBe(202);
    expect(backend.deleted).toEqual(['f']);
    // without the session (no cookie) the token alone is worth nothing
    expect((await del({ 'x-csrf-token': csrf })).statusCode).toBe(401);
  });

  it('rejects forged, tampered and expired cookies', async () => {
    const { cookie } = await login();
    const [name, value] = cookie.split('=') as [string, string];
    const body = JSON.parse(Buffer.from(value.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${Buffer.from(JSON.stringify({ ...body, exp: Date.now() + 1e9 })).toString('base64url')}.${value.split('.')[1]}`;
    for (const c of [`${name}=${forged}`, `${name}=${value}x`, `${name}=garbage`]) {
      expect((await app.inject({ url: '/system/functions', headers: { cookie: c } })).statusCode, c).toBe(401);
    }
    const s = sessions.issue({ kind: 'admin', user: 'admin' }, Date.now() - 61_000);
    expect(sessions.read(s.value)).toBeNull();
    const other = new ConsoleSessions({ key: randomBytes(32), ttlMs: 60_000 });
    expect(other.read(sessions.issue({ kind: 'admin', user: 'admin' }).value)).toBeNull();
  });

  it('a token session ends when the token is revoked; logout clears the cookie', async () => {
    const { cookie, csrf } = await login('Bearer mf_good');
    expect((await app.inject({ url: '/system/functions', headers: { cookie } })).statusCode).toBe(200);
    revoked = true;
    expect((await app.inject({ url: '/system/functions', headers: { cookie } })).statusCode).toBe(401);
    revoked = false;
    expect((await app.inject({ method: 'POST', url: '/ui/api/logout', headers: { cookie } })).statusCode).toBe(403);
    const out = await app.inject({ method: 'POST', url: '/ui/api/logout', headers: { cookie, 'x-csrf-token': csrf } });
    expect(out.statusCode).toBe(204);
    expect(String(out.headers['set-cookie'])).toMatch(/Max-Age=0/);
  });

  it('never hands the session cookie or the CSRF token to a function', () => {
    const event = (headers: Record<string, string>) =>
      buildInvocationEvent({ method: 'POST', url: '/function/f', headers, callId: 'c1', body: undefined }).headers;
    expect(event({ cookie: `a=1; ${SESSION_COOKIE}=secret.mac; b=2`, 'x-csrf-token': 't', 'x-other': 'kept' })).toEqual({
      cookie: 'a=1; b=2',
      'x-other': 'kept',
      'x-call-id': 'c1',
    });
    expect(event({ cookie: `${SESSION_COOKIE}=secret.mac` })).toEqual({ 'x-call-id': 'c1' });
  });

  it('marks the cookie Secure over TLS', () => {
    expect(sessions.cookie('v', true)).toMatch(/; Secure$/);
    expect(sessions.cookie('v', false)).not.toMatch(/Secure/);
    expect(readCookie('a=1; mayfly_session=xyz; b=2', SESSION_COOKIE)).toBe('xyz');
  });
});

describe('GET /system/hosts', () => {
  it('lists the hosts heard from with their VM start counters, needs credentials, and forgets silent ones', async () => {
    // a worker's /metrics (a real listener on loopback)
    const metrics = http.createServer((_req, res) => res.end('mayfly_vm_start_seconds_sum{host="w1",runtime="node",kind="pool"} 0.5\nmayfly_vm_start_seconds_count{host="w1",runtime="node",kind="pool"} 2\n'));
    await new Promise<void>((r) => metrics.listen(0, '127.0.0.1', r));
    try {
      const port = (metrics.address() as AddressInfo).port;
      const hb = { sentAt: 1, memoryBudgetMiB: 1024, memoryReservedMiB: 256, inflight: 0, vms: { pool: 2, warm: 1 }, warm: ['f@1'], pools: { node: 2 }, snapshots: [] };
      hosts.saw({ ...hb, hostId: 'w1', metricsUrl: `http://127.0.0.1:${port}/metrics` });
      hosts.saw({ ...hb, hostId: 'w2', metricsUrl: 'http://127.0.0.1:1/metrics' });
      const { cookie } = await login();
      expect((await app.inject({ url: '/system/hosts' })).statusCode).toBe(401);
      const res = await app.inject({ url: '/system/hosts', headers: { cookie } });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual([
        expect.objectContaining({ hostId: 'w1', vms: { pool: 2, warm: 1 }, ageMs: expect.any(Number), starts: { pool: { count: 2, sumSeconds: 0.5 } } }),
        expect.objectContaining({ hostId: 'w2', startsError: expect.stringContaining("could not read the worker's metrics") }),
      ]);
      expect(hosts.list(Date.now() + 5000)).toEqual([]);
    } finally {
      await new Promise((r) => metrics.close(r));
    }
  });
});

describe('console figures from call records', () => {
  const rec = (over: Partial<CallRecord>): CallRecord => ({
    callId: Math.random().toString(36),
    function: 'f',
    mode: 'sync',
    status: 'succeeded',
    attempts: 1,
    logs: [],
    queuedAt: '2026-01-01T00:00:10.000Z',
    startedAt: '2026-01-01T00:00:10.000Z',
    endedAt: '2026-01-01T00:00:10.100Z',
    start: 'pool',
    hostId: 'w1',
    ...over,
  });

  it('percentile is nearest-rank', () => {
    expect(percentile([], 0.5)).toBeUndefined();
    expect(percentile([1, 2, 3, 4], 0.5)).toBe(2);
    expect(percentile([1, 2, 3, 4], 0.99)).toBe(4);
    expect(percentile([7], 0.01)).toBe(7);
  });

  it('counts calls, errors, durations and start kinds per function in the window', () => {
    const records = [
      rec({}),
      rec({ endedAt: '2026-01-01T00:00:10.300Z', start: 'warm' }),
      rec({ status: 'failed' }),
      rec({ function: 'g', status: 'dead', start: 'cold' }),
      rec({ queuedAt: '2026-01-01T00:00:01.000Z' }), // before the window
    ];
    const s = statsByFunction(records, Date.parse('2026-01-01T00:00:05Z'));
    expect(s.get('f')).toEqual({ calls: 3, errors: 1, p50Ms: 100, p99Ms: 300, starts: { cold: 0, pool: 2, clone: 0, snapshot: 0, warm: 1 } });
    expect(s.get('g')).toMatchObject({ calls: 1, errors: 1, starts: { cold: 1 } });
  });

  it('turns two readings of start counters into starts per second and mean latency', () => {
    const prev = { atMs: 10_000, starts: { pool: { count: 4, sumSeconds: 0.4 }, refill: { count: 2, sumSeconds: 3 } } };
    const cur = { atMs: 12_000, starts: { pool: { count: 8, sumSeconds: 0.8 }, refill: { count: 2, sumSeconds: 3 }, warm: { count: 1, sumSeconds: 0.002 } } };
    expect(startRates(prev, cur)).toEqual({
      pool: { perSecond: 2, meanMs: 100 },
      refill: { perSecond: 0, meanMs: null },
      warm: { perSecond: 0.5, meanMs: 2 },
    });
    // a restarted worker (counters went down) counts from zero; no time passed gives nothing
    expect(startRates(cur, { atMs: 13_000, starts: { pool: { count: 1, sumSeconds: 0.05 } } })).toEqual({ pool: { perSecond: 1, meanMs: 50 } });
    expect(startRates(cur, cur)).toEqual({});
  });

  it('reads the VM start counters of a worker from its metrics text', () => {
    const text = [
      '# HELP mayfly_vm_start_seconds x',
      'mayfly_vm_start_seconds_bucket{le="0.1",host="w1",runtime="node",kind="pool"} 3',
      'mayfly_vm_start_seconds_sum{host="w1",runtime="node",kind="pool"} 0.25',
      'mayfly_vm_start_seconds_count{host="w1",runtime="node",kind="pool"} 3',
      'mayfly_vm_start_seconds_sum{host="w1",runtime="python3",kind="pool"} 0.5',
      'mayfly_vm_start_seconds_count{host="w1",runtime="python3",kind="pool"} 1',
      'mayfly_vm_start_seconds_count{host="w1",runtime="node",kind="warm"} 2',
      'mayfly_pool_refill_seconds_sum{host="w1",runtime="node"} 7.5',
      'mayfly_pool_refill_seconds_count{host="w1",runtime="node"} 5',
      'mayfly_pool_refills_total{host="w1",runtime="node"} 5',
      'gateway_functions_seconds_count{function_name="f",code="200"} 9',
    ].join('\n');
    expect(parseStartCounters(text)).toEqual({
      pool: { count: 4, sumSeconds: 0.75 },
      warm: { count: 2, sumSeconds: 0 },
      refill: { count: 5, sumSeconds: 7.5 },
    });
  });
});
