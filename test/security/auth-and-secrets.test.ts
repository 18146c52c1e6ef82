/**
 * The management API with authentication on (the default), against the real
 * platform: Basic auth as faas-cli sends it, API tokens that can be revoked,
 * rate-limited failures, functions that require a token, and secrets that are
 * encrypted at rest, never listed, and reach only the VM of a function that
 * lists them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { STORES } from '../../contracts/bus.js';
import { TestPlatform } from '../helpers/platform.js';

const PASSWORD = 'correct-horse-battery-staple';
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const ADMIN = basic('admin', PASSWORD);
let p: TestPlatform;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_AUTH: 'on', MAYFLY_ADMIN_PASSWORD: PASSWORD, MAYFLY_POOL_SIZE: '1' } });
  await p.waitForWorkers(['w1'], 1);
});

afterAll(async () => {
  await p?.stop();
});

function api(path: string, init: RequestInit & { auth?: string } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(init.headers as Record<string, string>) };
  if (init.auth) headers.authorization = init.auth;
  return fetch(`${p.gatewayUrl}${path}`, { ...init, headers });
}

describe('management API authentication', () => {
  it('refuses missing and wrong credentials with the same 401, and accepts faas-cli Basic auth', async () => {
    for (const auth of [undefined, basic('admin', 'wrong'), basic('root', PASSWORD), 'Bearer mf_aaaaaaaaaaaa_' + 'x'.repeat(43), 'Bearer ']) {
      const res = await api('/system/functions', auth ? { auth } : {});
      expect(res.status, String(auth)).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Basic realm="mayfly"');
      expect(await res.json()).toEqual({ error: 'authentication required: use Basic auth (faas-cli login) or an API token', code: 'UNAUTHORIZED' });
    }
    expect((await api('/system/functions', { auth: ADMIN })).status).toBe(200);
    expect((await api('/healthz')).status).toBe(200);
    expect(p.logs('gateway')).not.toContain(PASSWORD);
    expect(p.logs('gateway')).not.toContain('wrong');
  });

  it('issues API tokens that work until revoked', async () => {
    const created = await api('/system/tokens', { method: 'POST', auth: ADMIN, body: JSON.stringify({ name: 'ci' }) });
    expect(created.status).toBe(201);
    const { id, token } = (await created.json()) as { id: string; token: string };
    expect((await api('/system/functions', { auth: `Bearer ${token}` })).status).toBe(200);
    const list = (await (await api('/system/tokens', { auth: ADMIN })).json()) as Array<Record<string, unknown>>;
    expect(list.find((t) => t.id === id)).toEqual({ id, name: 'ci', createdAt: expect.any(String) });
    expect(JSON.stringify(list)).not.toContain(token.slice(-20));
    expect((await api(`/system/tokens/${id}`, { method: 'DELETE', auth: ADMIN })).status).toBe(204);
    expect((await api('/system/functions', { auth: `Bearer ${token}` })).status).toBe(401);
  });

  it('keeps invocations open unless the function asks for a token', async () => {
    const deploy = (service: string, annotations = {}) =>
      api('/system/functions', { method: 'POST', auth: ADMIN, body: JSON.stringify({ service, code: 'export const handler = async () => "hi";', annotations }) });
    expect((await deploy('open-fn')).status).toBe(202);
    expect((await deploy('closed-fn', { 'com.mayfly.auth': 'token' })).status).toBe(202);
    expect((await fetch(`${p.gatewayUrl}/function/open-fn`, { headers: { authorization: 'Bearer ' } })).status).toBe(200);
    expect((await fetch(`${p.gatewayUrl}/function/closed-fn`)).status).toBe(401);
    const { token } = (await (await api('/system/tokens', { method: 'POST', auth: ADMIN, body: JSON.stringify({ name: 'caller' }) })).json()) as { token: string };
    const ok = await fetch(`${p.gatewayUrl}/function/closed-fn`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toBe('hi');
  });
});

describe('secrets', () => {
  it('are encrypted at rest, listed by name only, and delivered only to the functions that list them', async () => {
    const value = 's3cr3t-value-' + Math.random().toString(36).slice(2);
    expect((await api('/system/secrets', { method: 'POST', auth: ADMIN, body: JSON.stringify({ name: 'db-password', value }) })).status).toBe(201);
    expect((await api('/system/secrets', { method: 'POST', auth: ADMIN, body: JSON.stringify({ name: 'db-password', value }) })).status).toBe(409);
    const listed = await (await api('/system/secrets', { auth: ADMIN })).text();
    expect(listed).toContain('db-password');
    expect(listed).not.toContain(value);

    const nc = await connect({ servers: p.nats.url });
    try {
      const kv = await new Kvm(nc).open(STORES.secrets);
      const raw = new TextDecoder().decode((await kv.get('db-password'))!.value);
      expect(raw).not.toContain(value);
      expect(raw).toMatch(/"iv"/);
    } finally {
      await nc.close();
    }

    const reader = `import fs from 'node:fs';
      export const handler = async () => {
        const dir = '/var/openfaas/secrets';
        const names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
        return { names, values: names.map((n) => fs.readFileSync(dir + '/' + n, 'utf8')), env: JSON.stringify(process.env).includes('s3cr3t') };
      };`;
    const deploy = (service: string, secrets?: string[]) =>
      api('/system/functions', { method: 'POST', auth: ADMIN, body: JSON.stringify({ service, code: reader, ...(secrets ? { secrets } : {}) }) });
    expect((await deploy('with-secret', ['db-password'])).status).toBe(202);
    expect((await deploy('without-secret')).status).toBe(202);
    const bad = await deploy('unknown-secret', ['nope']);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/secret "nope" does not exist/);

    const own = (await (await fetch(`${p.gatewayUrl}/function/with-secret`)).json()) as { names: string[]; values: string[]; env: boolean };
    expect(own).toEqual({ names: ['db-password'], values: [value], env: false });
    const other = (await (await fetch(`${p.gatewayUrl}/function/without-secret`)).json()) as { names: string[] };
    expect(other.names).toEqual([]);
    expect(p.logs('gateway') + p.logs('w1') + p.logs('scheduler')).not.toContain(value);
  });
});

describe('failed attempts', () => {
  it('are rate-limited per client address', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 30 && !statuses.includes(429); i++) statuses.push((await api('/system/functions', { auth: basic('admin', `guess-${i}`) })).status);
    // 401s (earlier tests failed a few times from this address too), then 429 within the limit of 20 per minute
    expect(statuses.at(-1)).toBe(429);
    expect(statuses.length).toBeLessThanOrEqual(20);
    expect(statuses.slice(0, -1).every((s) => s === 401)).toBe(true);
    const res = await api('/system/functions', { auth: ADMIN });
    // even the right password waits out the window from this address, and is told when to retry
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});
