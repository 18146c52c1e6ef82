/**
 * Function snapshots (on by default; annotation com.mayfly.snapshot: "false"
 * turns them off), end to end with real VMs: after the first call the worker snapshots a VM with the function
 * loaded; later calls start from it (x-mayfly-start: snapshot) with no module
 * load, still one fresh VM per per-request call, with re-keyed randomness; an
 * update is never served from the old version's snapshot.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '1', MAYFLY_FUNCTION_SNAPSHOTS_MAX: '4' } });
  await p.waitForWorkers(['w1'], 1);
});

afterAll(async () => {
  await p?.stop();
});

const code = (version: number) => `
  import crypto from 'node:crypto';
  // Module load: ~work a snapshot saves, and a value drawn once at load time.
  const table = Array.from({ length: 20000 }, (_, i) => Math.sqrt(i));
  const loadId = crypto.randomUUID();
  let calls = 0;
  export async function handler(event) {
    calls++;
    return { version: ${version}, calls, loadId, tableLen: table.length, random: crypto.randomBytes(16).toString('hex'), math: Math.random() };
  }`;

async function deploy(method: 'POST' | 'PUT', version: number, annotations: Record<string, string>): Promise<void> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service: 'snap', code: code(version), isolation: 'per-request', annotations }),
  });
  expect(res.status, await res.text()).toBeLessThan(300);
}

async function call(): Promise<{ start: string | null; v: Record<string, unknown> }> {
  const res = await fetch(`${p.gatewayUrl}/function/snap`, { method: 'POST', body: '{}' });
  expect(res.status).toBe(200);
  return { start: res.headers.get('x-mayfly-start'), v: (await res.json()) as Record<string, unknown> };
}

/** Calls until one is served from the snapshot (it is made in the background after the first start). */
async function untilSnapshot(version: number): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const r = await call();
    expect(r.v.version).toBe(version);
    if (r.start === 'snapshot') return;
    if (Date.now() > deadline) throw new Error('no call was served from a function snapshot within 90 s');
    await new Promise((res) => setTimeout(res, 500));
  }
}

describe('function snapshots', () => {
  it('serves later calls from a snapshot taken after the module loaded, one fresh VM per call (default deploy)', async () => {
    await deploy('POST', 1, {});
    const first = await call();
    expect(['pool', 'clone', 'cold']).toContain(first.start);
    await untilSnapshot(1);
    // One VM cloned from the snapshot is kept ready and refilled after each call; calls that come
    // before the refill is done take a pooled VM instead (which loads the module).
    const all = [];
    for (let i = 0; i < 6; i++) {
      await new Promise((res) => setTimeout(res, 1500));
      all.push(await call());
    }
    for (const r of all) {
      expect(['snapshot', 'pool', 'clone']).toContain(r.start);
      // per-request still means a VM per call: the handler's own state starts fresh every time.
      expect(r.v).toMatchObject({ version: 1, calls: 1, tableLen: 20000 });
    }
    const rs = all.filter((r) => r.start === 'snapshot');
    expect(rs.length, JSON.stringify(all.map((r) => r.start))).toBeGreaterThanOrEqual(3);
    // Values drawn at module load are the snapshot's (the documented trade-off, as with Lambda SnapStart)...
    expect(new Set(rs.map((r) => r.v.loadId)).size).toBe(1);
    // ...but every VM's random sources are re-keyed, so what a call draws differs.
    expect(new Set(rs.map((r) => r.v.random)).size).toBe(rs.length);
    expect(new Set(rs.map((r) => r.v.math)).size).toBe(rs.length);
    // Snapshot work does not starve the runtime's pool: it refills for other functions, and the
    // worker announces the snapshot (the scheduler prefers this host for the function).
    const deadline = Date.now() + 30_000;
    for (;;) {
      const hb = p.hosts().find((h) => h.hostId === 'w1');
      if (hb && (hb.pools.node ?? 0) >= 1 && hb.snapshots.includes('snap@1')) break;
      if (Date.now() > deadline) throw new Error(`pool not refilled or snapshot not announced: ${JSON.stringify(hb)}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  });

  it('an update is served by the new code, never from the old version snapshot', async () => {
    await deploy('PUT', 2, { 'com.mayfly.snapshot': 'true' });
    const r = await call();
    expect(r.v.version).toBe(2);
    await untilSnapshot(2);
    expect((await call()).v.version).toBe(2);
  });

  it('with com.mayfly.snapshot: "false", no snapshot is made', async () => {
    await deploy('PUT', 3, { 'com.mayfly.snapshot': 'false' });
    const starts = [];
    for (let i = 0; i < 4; i++) {
      const r = await call();
      expect(r.v.version).toBe(3);
      starts.push(r.start);
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(starts).not.toContain('snapshot');
  });
});
