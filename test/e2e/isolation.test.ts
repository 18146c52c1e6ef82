/**
 * Isolation modes and the fast path with real VMs: per-request calls never see
 * each other's state, per-function calls do; clones of one template draw
 * different random numbers; the pool refills after a burst.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '2', MAYFLY_POOL_MAX: '4' } });
  await p.waitForWorkers(['w1'], 2);
});

afterAll(async () => {
  await p?.stop();
});

const stateful = `
  import fs from 'node:fs';
  import crypto from 'node:crypto';
  globalThis.counter = globalThis.counter ?? 0;
  const big = [];
  export async function handler(event) {
    globalThis.counter++;
    const sawFile = fs.existsSync('/tmp/mark') ? fs.readFileSync('/tmp/mark', 'utf8') : null;
    fs.writeFileSync('/tmp/mark', event.body);
    const sawMemory = big.length;
    big.push(Buffer.alloc(1024 * 1024, 7));
    return { counter: globalThis.counter, sawFile, sawMemory,
             random: crypto.randomBytes(16).toString('hex'), uuid: crypto.randomUUID(), math: Math.random(),
             web: Array.from(globalThis.crypto.getRandomValues(new Uint32Array(2))) };
  }`;

async function deploy(service: string, isolation: string): Promise<void> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, code: stateful, isolation }),
  });
  expect(res.status).toBe(202);
}

async function call(service: string, body: string) {
  const res = await fetch(`${p.gatewayUrl}/function/${service}`, { method: 'POST', body });
  expect(res.status).toBe(200);
  return { start: res.headers.get('x-mayfly-start'), v: (await res.json()) as Record<string, unknown> };
}

describe('isolation', () => {
  it('per-request: every call starts from a clean VM (globals, files, memory)', async () => {
    await deploy('fresh', 'per-request');
    const results = [];
    for (const body of ['one', 'two', 'three']) results.push(await call('fresh', body));
    for (const r of results) {
      expect(r.v).toMatchObject({ counter: 1, sawFile: null, sawMemory: 0 });
      expect(['pool', 'clone']).toContain(r.start); // copy-on-write clones of one template
    }
    // Clones of the same template, yet every random source differs.
    for (const k of ['random', 'uuid', 'math', 'web']) {
      expect(new Set(results.map((r) => JSON.stringify(r.v[k]))).size, k).toBe(results.length);
    }
  });

  it('per-function: one VM serves successive calls and keeps their state', async () => {
    await deploy('sticky', 'per-function');
    const a = await call('sticky', 'first');
    const b = await call('sticky', 'second');
    const c = await call('sticky', 'third');
    expect(a.v).toMatchObject({ counter: 1, sawFile: null, sawMemory: 0 });
    expect(b.v).toMatchObject({ counter: 2, sawFile: 'first', sawMemory: 1 });
    expect(c.v).toMatchObject({ counter: 3, sawFile: 'second', sawMemory: 2 });
    expect([b.start, c.start]).toEqual(['warm', 'warm']);
  });

  it('refills the pool after a burst drained it', async () => {
    await deploy('burst', 'per-request');
    const burst = await Promise.all(Array.from({ length: 6 }, (_, i) => call('burst', String(i))));
    expect(burst.every((r) => r.v.counter === 1)).toBe(true);
    // The burst took the pooled VMs (at least the two that were ready).
    expect(burst.filter((r) => r.start === 'pool').length).toBeGreaterThanOrEqual(1);
    const since = Date.now();
    await p.waitFor(
      () => {
        const hb = p.hosts().find((h) => h.hostId === 'w1');
        return hb !== undefined && hb.sentAt > since && (hb.pools.node ?? 0) >= 2;
      },
      60_000,
      'the pool to refill to 2',
    );
  });
});
