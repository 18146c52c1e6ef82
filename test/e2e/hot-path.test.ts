/**
 * The hot path, end to end with real VMs: a call of a function version that a
 * worker already holds a VM of goes straight to that worker (one bus hop, no
 * scheduler), seen in the call's trace (`X-Mayfly-Trace: 1` → `Server-Timing`);
 * a warm VM keeps running for MAYFLY_WARM_LINGER_MS after a call and is paused
 * after that, seen from inside the guest: its clock stands still while it is
 * paused (QEMU stops the virtual clock), so the guest's own time between two
 * calls tells whether it ran in between.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServerTiming } from '../../lib/trace.js';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;
const LINGER_MS = 1500;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '1', MAYFLY_WARM_LINGER_MS: String(LINGER_MS) } });
  await p.waitForWorkers(['w1'], 1);
});

afterAll(async () => {
  await p?.stop();
});

const clockFn = `
  export async function handler(event) {
    return { guestMs: performance.now(), body: event.body };
  }`;

async function deploy(service: string, code: string, method = 'POST'): Promise<void> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, code, isolation: 'per-function' }),
  });
  expect(res.status, await res.text()).toBe(202);
}

async function traced(service: string, body = 'x') {
  const res = await fetch(`${p.gatewayUrl}/function/${service}`, { method: 'POST', body, headers: { 'x-mayfly-trace': '1' } });
  expect(res.status).toBe(200);
  const steps = parseServerTiming(res.headers.get('server-timing') ?? '').map(([name]) => name);
  return { start: res.headers.get('x-mayfly-start'), steps, v: (await res.json()) as { guestMs: number; body: string } };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('hot path', () => {
  it('places the first call, then sends the version\'s calls straight to the worker that holds its VM', async () => {
    await deploy('hp-clock', clockFn);
    const first = await traced('hp-clock');
    expect(first.steps).toContain('sched-recv'); // no worker held a VM of it: placed by the scheduler
    expect(first.steps).toContain('gw-place');
    for (let i = 0; i < 3; i++) {
      const r = await traced('hp-clock', `b${i}`);
      expect(r.v.body).toBe(`b${i}`);
      expect(r.start).toBe('warm');
      expect(r.steps).not.toContain('sched-recv');
      expect(r.steps).not.toContain('gw-place');
      expect(r.steps).toEqual(expect.arrayContaining(['gw-send', 'worker-recv', 'worker-vm', 'guest-result', 'gw-result', 'total']));
    }
    // Without the header nothing is traced.
    const plain = await fetch(`${p.gatewayUrl}/function/hp-clock`, { method: 'POST', body: 'x' });
    expect(plain.headers.get('server-timing')).toBeNull();
    await plain.text();
  });

  it('keeps a warm VM running between close calls and pauses it after the linger', async () => {
    // Within the linger the guest runs on: its clock advances with the host's.
    const a = await traced('hp-clock');
    await sleep(600);
    const b = await traced('hp-clock');
    expect(b.v.guestMs - a.v.guestMs).toBeGreaterThan(500);
    // Past the linger it is paused: the guest's clock stood still for most of the gap.
    await sleep(LINGER_MS + 2500);
    const c = await traced('hp-clock');
    const guestGap = c.v.guestMs - b.v.guestMs;
    expect(guestGap).toBeGreaterThan(LINGER_MS - 200);
    expect(guestGap).toBeLessThan(LINGER_MS + 1500);
  });

  it('never serves a new version from the old version\'s VM, and the new one gets the one-hop path too', async () => {
    await deploy('hp-clock', clockFn.replace('body: event.body', 'body: "v2:" + event.body'), 'PUT');
    const first = await traced('hp-clock', 'n');
    expect(first.v.body).toBe('v2:n');
    expect(first.start).not.toBe('warm');
    const next = await traced('hp-clock', 'm');
    expect(next.v.body).toBe('v2:m');
    expect(next.steps).not.toContain('sched-recv');
  });
});
