/**
 * The async fault test: 300 async calls with callbacks to a local receiver
 * while the platform is hurt on purpose: the worker is killed with SIGKILL (a
 * new one is started), a scheduler replica is killed with SIGKILL, and
 * nats-server is restarted. Afterwards every accepted call id must have
 * exactly one final record and exactly one callback. Prints the counts.
 *
 * Everything runs with the shipped default settings (heartbeats, host TTL,
 * ack wait, timeouts, async slots): a dead host's calls are given up at the
 * host TTL, not at their timeout.
 *
 * Clients retry a submission that failed (NATS down: 503) with the same call
 * id, as a client of an idempotent API does.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { CallRecord } from '../../contracts/bus.js';
import { CallbackReceiver } from '../helpers/callback-receiver.js';
import { TestPlatform } from '../helpers/platform.js';

const CALLS = Number(process.env.FAULT_CALLS ?? 300);
let p: TestPlatform;
let rx: CallbackReceiver;

beforeAll(async () => {
  rx = await CallbackReceiver.start();
  p = await TestPlatform.start({
    workers: 1,
    schedulers: 2,
    // The shipped defaults (contracts/config.ts), also for what TestPlatform shortens for other suites:
    // failover must come from heartbeats, not from timeouts shortened for the test.
    env: { MAYFLY_HEARTBEAT_MS: '1000', MAYFLY_HOST_TTL_MS: '5000', MAYFLY_OFFER_TIMEOUT_MS: '3000' },
  });
  await p.waitForWorkers(['w1'], 1);
});

afterAll(async () => {
  await p?.stop();
  await rx?.close();
});

async function submit(i: number): Promise<boolean> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${p.gatewayUrl}/async-function/work`, {
        method: 'POST',
        headers: { 'x-call-id': `fault-${i}`, 'x-callback-url': rx.url, 'content-type': 'text/plain' },
        body: String(i),
        signal: AbortSignal.timeout(10_000),
      });
      if (res.status === 202) return true;
      await res.arrayBuffer();
    } catch {
      // gateway or NATS momentarily away
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

async function record(callId: string): Promise<CallRecord | null> {
  try {
    const res = await fetch(`${p.gatewayUrl}/system/invocations/${callId}`);
    return res.status === 200 ? ((await res.json()) as CallRecord) : null;
  } catch {
    return null;
  }
}

it(`keeps every accepted async call through worker, scheduler and NATS failures (${CALLS} calls)`, async () => {
  const deploy = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      service: 'work',
      isolation: 'per-function', // and the default function timeout (30 s), like everything else here
      code: `import crypto from 'node:crypto';
             export const handler = async (e) => {
               await new Promise((r) => setTimeout(r, 50));
               return { n: Number(e.body), h: crypto.createHash('sha256').update(e.body).digest('hex').slice(0, 8) };
             };`,
    }),
  });
  expect(deploy.status).toBe(202);

  const t0 = Date.now();
  const accepted = new Set<number>();
  const submitting = (async () => {
    for (let i = 0; i < CALLS; i++) {
      if (await submit(i)) accepted.add(i);
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const faults = (async () => {
    await new Promise((r) => setTimeout(r, 3000));
    await p.kill('w1'); // SIGKILL: its VMs die with it
    p.startWorker('w2');
    await new Promise((r) => setTimeout(r, 4000));
    await p.kill('s1'); // SIGKILL one scheduler replica; s2 carries on
    await new Promise((r) => setTimeout(r, 4000));
    await p.restartNats();
    p.startService('scheduler', 's3');
  })();
  await Promise.all([submitting, faults]);

  // Wait until every accepted call is final and has had its callback.
  const finals = new Map<number, CallRecord>();
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    for (const i of accepted) {
      if (finals.has(i)) continue;
      const r = await record(`fault-${i}`);
      if (r && ['succeeded', 'failed', 'dead', 'cancelled'].includes(r.status)) finals.set(i, r);
    }
    if (finals.size === accepted.size && [...accepted].every((i) => rx.forCall(`fault-${i}`).length >= 1)) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  await new Promise((r) => setTimeout(r, 3000)); // late duplicates would show up here

  const callbacks = new Map<string, number>();
  for (const c of rx.received) {
    const id = String(c.headers['x-call-id']);
    callbacks.set(id, (callbacks.get(id) ?? 0) + 1);
  }
  const ids = [...accepted].map((i) => `fault-${i}`);
  const counts = {
    accepted: accepted.size,
    succeeded: [...finals.values()].filter((r) => r.status === 'succeeded').length,
    retried: [...finals.values()].filter((r) => r.attempts > 1).length,
    dead: [...finals.values()].filter((r) => r.status === 'dead').length,
    failed: [...finals.values()].filter((r) => r.status === 'failed').length,
    lost: [...accepted].filter((i) => !finals.has(i) || !callbacks.has(`fault-${i}`)).length,
    duplicated: ids.filter((id) => (callbacks.get(id) ?? 0) > 1).length,
    seconds: Math.round((Date.now() - t0) / 1000),
  };
  process.stdout.write(`async fault test: ${JSON.stringify(counts)}\n`);
  for (const r of finals.values()) if (r.status === 'failed') process.stdout.write(`failed call ${r.callId}: ${r.statusCode} ${r.error ?? ''}\n`);

  expect(counts.accepted).toBe(CALLS);
  expect(counts.lost).toBe(0);
  expect(counts.duplicated).toBe(0);
  // Every call ends in one final record; a function that returns normally succeeds.
  expect(counts.succeeded + counts.dead).toBe(counts.accepted);
  for (const [i, r] of finals) if (r.status === 'succeeded') expect(r.result).toMatchObject({ n: i });
});
