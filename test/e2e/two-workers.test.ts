/**
 * Two workers (two processes) on one machine: calls spread over both; one is
 * killed with SIGKILL and calls keep succeeding on the other. Its VMs die with
 * it (QEMU runs with a parent-death signal), so nothing is orphaned.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { SUBJECTS } from '../../contracts/bus.js';
import { jsonCodec } from '../../lib/nats.js';
import { isAlive } from '../helpers/processes.js';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 2, env: { MAYFLY_POOL_SIZE: '1' } });
  // A third worker whose memory budget cannot hold a single VM.
  p.startWorker('tiny', { MAYFLY_MEMORY_BUDGET_MB: '256' });
  await p.waitForWorkers(['w1', 'w2'], 1);
  await p.waitForWorkers(['tiny'], 0);
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
  // Spread over both big workers; never on the one that is full.
  expect(new Set(before.map((r) => r.host))).toEqual(new Set(['w1', 'w2']));

  // The full worker itself refuses an offer, with the reason, so a scheduler moves on.
  const fnRecord = (await (await fetch(`${p.gatewayUrl}/system/function/square`)).json()) as Record<string, unknown>;
  expect(fnRecord.name).toBe('square');
  const nc = await connect({ servers: p.nats.url });
  try {
    const probe = await nc.request(SUBJECTS.hostInvoke('tiny'), jsonCodec.encode({
      callId: 'probe', receivedAt: Date.now(), offerExpiresAt: Date.now() + 5000, replyTo: 'nowhere',
      event: { method: 'GET', path: '/', query: {}, headers: {}, body: '', isBase64Encoded: false },
      fn: { name: 'square', runtime: 'node', handler: 'handler', codeHash: 'x', codeBytes: 1, envVars: {}, memoryMiB: 128,
            timeoutMs: 1000, isolation: 'per-request', image: 'mayfly/node', labels: {}, annotations: {}, version: 1, createdAt: '', updatedAt: '' },
    }), { timeout: 5000 });
    expect(jsonCodec.decode(probe.data)).toEqual({ accepted: false, hostId: 'tiny', reason: 'host memory budget is full' });
  } finally {
    await nc.close();
  }

  const w1Qemus = p.qemuPids('w1');
  expect(w1Qemus.length).toBeGreaterThan(0); // at least its pooled VM
  await p.kill('w1');
  // Its VMs go with it.
  await p.waitFor(() => w1Qemus.every((pid) => !isAlive(pid)), 10_000, 'the VMs of the killed worker to die');

  const after: Array<{ status: number; host: string | null; body: unknown }> = [];
  for (let i = 10; i < 14; i++) after.push(await call(i));
  for (const [i, r] of after.entries()) expect(r).toMatchObject({ status: 200, host: 'w2', body: (i + 10) ** 2 });
  expect(p.logs('tiny')).not.toMatch(/call done/);
});
