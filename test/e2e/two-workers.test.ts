/**
 * Two workers (two processes) on one machine: calls spread over both; one is
 * killed with SIGKILL and calls keep succeeding on the other. Its VMs die with
 * it (QEMU runs with a parent-death signal), so nothing is orphaned.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isAlive } from '../helpers/processes.js';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 2, env: { MAYFLY_POOL_SIZE: '1' } });
  await p.waitForWorkers(['w1', 'w2'], 1);
});

afterAll(async () => {
  const pids = p?.qemuPids() ?? [];
  await p?.stop();
  for (const pid of pids) expect(isAlive(pid)).toBe(false);
});

async function call(i: number): Promise<{ status: number; host: string | null; body: unknown }> {
  const res = await fetch(`${p.gatewayUrl}/function/square`, { method: 'POST', body: String(i) });
  return { status: res.status, host: res.headers.get('x-mayfly-host'), body: await res.json() };
}

it('spreads calls over both workers and survives losing one', async () => {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service: 'square', code: 'export const handler = async (e) => Number(e.body) ** 2;' }),
  });
  expect(res.status).toBe(202);

  const before = await Promise.all([1, 2, 3, 4, 5, 6].map(call));
  for (const [i, r] of before.entries()) expect(r).toMatchObject({ status: 200, body: (i + 1) ** 2 });
  expect(new Set(before.map((r) => r.host))).toEqual(new Set(['w1', 'w2']));

  const w1Qemus = p.qemuPids('w1');
  expect(w1Qemus.length).toBeGreaterThan(0); // at least its pooled VM
  await p.kill('w1');
  // Its VMs go with it.
  await p.waitFor(() => w1Qemus.every((pid) => !isAlive(pid)), 10_000, 'the VMs of the killed worker to die');

  const after: Array<{ status: number; host: string | null; body: unknown }> = [];
  for (let i = 10; i < 14; i++) after.push(await call(i));
  for (const [i, r] of after.entries()) expect(r).toMatchObject({ status: 200, host: 'w2', body: (i + 10) ** 2 });
});
