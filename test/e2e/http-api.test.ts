/**
 * End to end through the HTTP API, with every part real: nats-server,
 * scheduler, a worker booting QEMU VMs, the gateway. Deploy, list, invoke,
 * update, delete, and bad inputs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/config.js';
import { ensureConfiguredImage } from '../../functions/image/image-options.js';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;
let url: string;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '1' } });
  url = p.gatewayUrl;
  await p.waitForWorkers(['w1'], 1);
});

afterAll(async () => {
  const pids = p?.qemuPids() ?? [];
  await p?.stop();
  // The worker destroyed its VMs on SIGTERM (and pdeathsig would have caught any it missed).
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
});

async function deploy(body: unknown, method = 'POST') {
  return fetch(`${url}/system/functions`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

const echo = `
  import os from 'node:os';
  export async function handler(event, context) {
    console.log('echo', event.method, event.path);
    return { method: event.method, path: event.path, query: event.query, body: event.body,
             contentType: event.headers['content-type'] ?? null, b64: event.isBase64Encoded,
             fn: context.functionName, callId: context.callId, kernel: os.release(), version: 1 };
  }`;

describe('HTTP API end to end', () => {
  it('deploys, lists, gets, invokes (JSON and text, path and query), updates and deletes a function', async () => {
    const created = await deploy({ service: 'echo', code: echo, isolation: 'per-function', labels: { team: 'a' } });
    expect(created.status).toBe(202);
    expect((await deploy({ service: 'echo', code: echo })).status).toBe(409);

    const list = (await (await fetch(`${url}/system/functions`)).json()) as Array<Record<string, unknown>>;
    const entry = list.find((f) => f.name === 'echo');
    expect(entry).toMatchObject({ name: 'echo', runtime: 'node', isolation: 'per-function', labels: { team: 'a' }, replicas: 1 });
    for (const k of ['image', 'invocationCount', 'availableReplicas', 'annotations', 'createdAt']) expect(entry).toHaveProperty(k);
    expect((await fetch(`${url}/system/function/echo`)).status).toBe(200);

    const res = await fetch(`${url}/function/echo/some/path?x=1&y=a&y=b`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' },
      body: JSON.stringify({ hello: 'world' }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-call-id')).toMatch(/.+/);
    expect(Number(res.headers.get('x-duration-seconds'))).toBeGreaterThan(0);
    expect(['cold', 'pool', 'warm']).toContain(res.headers.get('x-mayfly-start'));
    const v = (await res.json()) as Record<string, unknown>;
    expect(v).toMatchObject({
      method: 'POST',
      path: '/some/path',
      query: { x: '1', y: ['a', 'b'] },
      body: '{"hello":"world"}',
      contentType: 'application/json',
      b64: false,
      fn: 'echo',
      callId: res.headers.get('x-call-id'),
    });
    // The guest runs the kernel the settings chose (the worker's image; the global setup built it).
    const image = await ensureConfiguredImage(loadConfig());
    expect(v.kernel).toBe(image.kernelRelease);
    expect(v.kernel).not.toBe((await import('node:os')).release());

    const text = await fetch(`${url}/function/echo`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'plain text ✓' });
    expect(await text.json()).toMatchObject({ method: 'PUT', path: '/', body: 'plain text ✓', contentType: 'text/plain' });
    // per-function isolation: the second call reuses the paused VM
    expect(text.headers.get('x-mayfly-start')).toBe('warm');

    const updated = await deploy({ service: 'echo', code: echo.replace('version: 1', 'version: 2'), isolation: 'per-function' }, 'PUT');
    expect(updated.status).toBe(202);
    const after = await fetch(`${url}/function/echo`, { method: 'POST', body: 'x' });
    expect(((await after.json()) as { version: number }).version).toBe(2);
    expect(after.headers.get('x-mayfly-start')).not.toBe('warm'); // never a VM of the old version

    const del = await fetch(`${url}/system/functions`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ functionName: 'echo' }),
    });
    expect([200, 202]).toContain(del.status);
    expect((await fetch(`${url}/function/echo`, { method: 'POST', body: 'x' })).status).toBe(404);
    expect((await fetch(`${url}/system/function/echo`)).status).toBe(404);
  });

  it('runs CommonJS handlers and maps statusCode, headers and bodies', async () => {
    const code = `
      exports.handler = async (event) => {
        if (event.path === '/created') return { statusCode: 201, headers: { 'x-made-by': 'mayfly', 'content-type': 'text/plain' }, body: 'made it' };
        if (event.path === '/object') return { statusCode: 202, body: { queued: true } };
        if (event.path === '/nothing') return undefined;
        if (event.path === '/throw') throw new Error('handler exploded');
        return ['plain', 'value'];
      };`;
    expect((await deploy({ service: 'shapes', code, isolation: 'per-function' })).status).toBe(202);
    const created = await fetch(`${url}/function/shapes/created`);
    expect(created.status).toBe(201);
    expect(created.headers.get('x-made-by')).toBe('mayfly');
    expect(await created.text()).toBe('made it');

    const obj = await fetch(`${url}/function/shapes/object`);
    expect(obj.status).toBe(202);
    expect(await obj.json()).toEqual({ queued: true });

    const nothing = await fetch(`${url}/function/shapes/nothing`);
    expect(nothing.status).toBe(204);

    const plain = await fetch(`${url}/function/shapes/`);
    expect(plain.status).toBe(200);
    expect(await plain.json()).toEqual(['plain', 'value']);

    const thrown = await fetch(`${url}/function/shapes/throw`);
    expect(thrown.status).toBe(500);
    const body = (await thrown.json()) as { error: string; callId: string };
    expect(body.error).toMatch(/handler exploded/);
    expect(body.callId).toBe(thrown.headers.get('x-call-id'));
    // The caller gets no stack; the call record (management API) has it, pointing at the handler's line.
    expect(JSON.stringify(body)).not.toMatch(/index\.cjs/);
    const rec = (await (await fetch(`${url}/system/invocations/${body.callId}`)).json()) as { error?: string; errorStack?: string };
    expect(rec.error).toMatch(/handler exploded/);
    expect(rec.errorStack).toMatch(/index\.cjs:6:/);
  });

  it('answers bad inputs with a clear 4xx/5xx and keeps serving', async () => {
    const bad = await fetch(`${url}/system/functions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"service": ' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/json/i);

    const missing = await deploy({ service: 'nocode' });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: string }).error).toMatch(/code/);

    const badName = await deploy({ service: 'Bad_Name', code: 'exports.handler = () => 1' });
    expect(badName.status).toBe(400);
    expect(((await badName.json()) as { error: string }).error).toMatch(/service/);

    expect((await fetch(`${url}/function/does-not-exist`, { method: 'POST', body: 'x' })).status).toBe(404);

    expect((await deploy({ service: 'slow', code: 'export async function handler() { for (;;) {} }', timeout: 2 })).status).toBe(202);
    const huge = await fetch(`${url}/function/slow`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x'.repeat(7 * 1024 * 1024) });
    expect(huge.status).toBe(413);

    const timedOut = await fetch(`${url}/function/slow`, { method: 'POST', body: 'x' });
    expect(timedOut.status).toBe(504);
    expect(((await timedOut.json()) as { error: string }).error).toMatch(/did not return within 2000 ms/);

    const broken = await deploy({ service: 'broken', code: 'export const handler = ;' });
    expect(broken.status).toBe(202);
    const initFail = await fetch(`${url}/function/broken`, { method: 'POST', body: 'x' });
    expect(initFail.status).toBe(500);
    expect(((await initFail.json()) as { error: string }).error).toMatch(/failed to load/);

    // still serving
    expect((await deploy({ service: 'ok', code: 'exports.handler = async () => "still fine"' })).status).toBe(202);
    const ok = await fetch(`${url}/function/ok`, { method: 'POST', body: 'x' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toBe('still fine');
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });
});
