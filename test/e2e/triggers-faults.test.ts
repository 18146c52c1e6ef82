/**
 * Triggers under faults (issue 15), two scheduler replicas on a real platform:
 *
 * 1. A schedule `@every 1s` for 20 s while one replica is SIGKILLed half-way:
 *    20 ± 1 calls, one record per tick, one result per tick on the reply subject.
 * 2. 500 messages with Nats-Msg-Id on a subject (every fifth published twice)
 *    while a scheduler replica is SIGKILLed and nats-server is restarted: every
 *    message has exactly one record, final, the function ran for each (succeeded
 *    with the message's own number; counted in the worker's log), the repeated
 *    publishes ran nothing more; lost = 0. Runs twice of one message are counted
 *    and must each be a recorded retry (see the comment at the assertion).
 *
 * Prints the counts. Publishers retry a publish JetStream did not confirm, with
 * the same Nats-Msg-Id, as a NATS client should.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { CallRecord } from '../../contracts/bus.js';
import { TestPlatform } from '../helpers/platform.js';

const MESSAGES = Number(process.env.TRIGGER_FAULT_MESSAGES ?? 500);
let p: TestPlatform;
let nc: NatsConnection;
let js: JetStreamClient;

beforeAll(async () => {
  p = await TestPlatform.start({
    workers: 1,
    schedulers: 2,
    env: {
      // Fault handling runs with the shipped defaults (ack wait, retries, placement and invoke timeouts).
      MAYFLY_POOL_SIZE: '2',
      // Schedulers see a deploy or removal within 200 ms, so the 20 s window holds 20 ticks ± 1.
      MAYFLY_TRIGGER_REFRESH_MS: '200',
    },
  });
  await p.waitForWorkers(['w1'], 1);
  nc = await connect({ servers: p.nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  js = jetstream(nc, { timeout: 5000 });
});

afterAll(async () => {
  await nc?.close().catch(() => {});
  await p?.stop();
});

async function deploy(service: string, annotations: Record<string, string>, code: string): Promise<void> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, isolation: 'per-function', timeout: 5, annotations, code }),
  });
  expect(res.status).toBe(202);
}

async function remove(service: string): Promise<void> {
  await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'DELETE',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ functionName: service }),
  });
}

async function record(callId: string): Promise<CallRecord | null> {
  try {
    const res = await fetch(`${p.gatewayUrl}/system/invocations/${callId}`);
    return res.status === 200 ? ((await res.json()) as CallRecord) : null;
  } catch {
    return null;
  }
}

async function calls(fn: string): Promise<CallRecord[]> {
  return (await (await fetch(`${p.gatewayUrl}/system/invocations?function=${fn}&limit=1000`)).json()) as CallRecord[];
}

/** Runs of each call in the guest, from the worker's `call done` log lines (the worker is not killed here). */
function runs(prefix: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of p.logs('w1').split('\n')) {
    if (!line.includes('"call done"')) continue;
    try {
      const id = (JSON.parse(line) as { callId?: string }).callId;
      if (id?.startsWith(prefix)) out.set(id, (out.get(id) ?? 0) + 1);
    } catch {
      // not a log record
    }
  }
  return out;
}

const isFinal = (r: CallRecord | null) => r !== null && ['succeeded', 'failed', 'dead', 'cancelled'].includes(r.status);

it('a schedule every second for 20 s with two replicas, one SIGKILLed half-way: 20 ± 1 calls, no tick twice', async () => {
  const results = new Map<string, number>();
  const sub = nc.subscribe('ticks.done', {
    callback: (_e, m) => {
      const id = m.headers?.get('x-call-id') ?? '';
      results.set(id, (results.get(id) ?? 0) + 1);
    },
  });
  await deploy('tick', { topic: 'cron-function', schedule: '@every 1s', 'com.mayfly.reply_subject': 'ticks.done' }, `export const handler = async (e) => e.headers['x-mayfly-tick'];`);
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 10_000));
  await p.kill('s1');
  await new Promise((r) => setTimeout(r, Math.max(0, t0 + 20_000 - Date.now())));
  await remove('tick');
  const t1 = Date.now();

  let records: CallRecord[] = [];
  await p.waitFor(async () => {
    records = await calls('tick');
    return records.every(isFinal) && records.every((r) => (results.get(r.callId) ?? 0) >= 1);
  }, 60_000, 'every tick final with its result');
  await new Promise((r) => setTimeout(r, 2000)); // late duplicates would show up here
  const ticks = records.map((r) => Number(r.callId.replace('tick.tick-', '')));
  const counts = {
    calls: records.length,
    succeeded: records.filter((r) => r.status === 'succeeded').length,
    cancelled: records.filter((r) => r.status === 'cancelled').length,
    attempts: records.reduce((n, r) => n + r.attempts, 0),
    results: [...results.values()].reduce((a, b) => a + b, 0),
    duplicatedResults: [...results.values()].filter((n) => n > 1).length,
    guestRuns: [...runs('tick.').values()].reduce((a, b) => a + b, 0),
    ranTwice: [...runs('tick.').values()].filter((n) => n > 1).length,
    seconds: Math.round((t1 - t0) / 1000),
  };
  process.stdout.write(`schedule fault test: ${JSON.stringify(counts)}\n`);
  sub.unsubscribe();

  expect(counts.calls).toBeGreaterThanOrEqual(19);
  expect(counts.calls).toBeLessThanOrEqual(21);
  expect(new Set(ticks).size).toBe(ticks.length); // one record per tick
  for (const t of ticks) expect(t % 1000).toBe(0);
  // Consecutive seconds: no tick skipped while s1 died.
  const sorted = [...ticks].sort((a, b) => a - b);
  expect(sorted.at(-1)! - sorted[0]!).toBe((sorted.length - 1) * 1000);
  expect(counts.duplicatedResults).toBe(0);
  expect(counts.ranTwice).toBe(0);
  expect(counts.guestRuns).toBe(counts.succeeded);
  for (const r of records) if (r.status === 'succeeded') expect(r.result).toBe(new Date(Number(r.callId.replace('tick.tick-', ''))).toISOString());
  // The tick at removal may end cancelled; the rest ran.
  expect(counts.succeeded).toBeGreaterThanOrEqual(counts.calls - 1);
});

async function publishDurably(i: number): Promise<boolean> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      await js.publish(`jobs.batch.${i % 7}`, new TextEncoder().encode(String(i)), { msgID: `job-${i}` });
      return true;
    } catch {
      // NATS restarting: publish again with the same Nats-Msg-Id
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  return false;
}

it(`keeps every triggered message through a scheduler SIGKILL and a nats-server restart (${MESSAGES} messages)`, async () => {
  p.startService('scheduler', 's3'); // two replicas again
  await deploy(
    'work',
    { topic: 'jobs.>' },
    `export const handler = async (e) => { await new Promise((r) => setTimeout(r, 20)); return { n: Number(e.body), id: e.headers['x-nats-msg-id'] }; };`,
  );
  const t0 = Date.now();
  const accepted = new Set<number>();
  const publishing = (async () => {
    for (let i = 0; i < MESSAGES; i++) {
      if (await publishDurably(i)) accepted.add(i);
      if (i % 5 === 0) await publishDurably(i); // the same Nats-Msg-Id again: must not run again
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const faults = (async () => {
    await new Promise((r) => setTimeout(r, 4000));
    await p.kill('s2'); // SIGKILL one replica mid-stream; s3 carries on
    await new Promise((r) => setTimeout(r, 4000));
    await p.restartNats();
    p.startService('scheduler', 's4');
  })();
  await Promise.all([publishing, faults]);

  const finals = new Map<number, CallRecord>();
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline && finals.size < accepted.size) {
    for (const i of accepted) {
      if (finals.has(i)) continue;
      const r = await record(`work.m-job-${i}`);
      if (r && isFinal(r)) finals.set(i, r);
    }
    if (finals.size < accepted.size) await new Promise((r) => setTimeout(r, 1000));
  }
  await new Promise((r) => setTimeout(r, 3000));
  const all = await calls('work');
  const counts = {
    published: MESSAGES + Math.ceil(MESSAGES / 5),
    accepted: accepted.size,
    records: all.length,
    succeeded: [...finals.values()].filter((r) => r.status === 'succeeded').length,
    retried: [...finals.values()].filter((r) => r.attempts > 1).length,
    dead: [...finals.values()].filter((r) => r.status === 'dead').length,
    failed: [...finals.values()].filter((r) => r.status === 'failed').length,
    lost: [...accepted].filter((i) => !finals.has(i)).length,
    guestRuns: [...runs('work.').values()].reduce((a, b) => a + b, 0),
    ranTwice: [...runs('work.').values()].filter((n) => n > 1).length,
    notRun: [...accepted].filter((i) => !runs('work.').has(`work.m-job-${i}`)).length,
    seconds: Math.round((Date.now() - t0) / 1000),
  };
  process.stdout.write(`trigger fault test: ${JSON.stringify(counts)}\n`);
  const twice = [...runs('work.')].filter(([, n]) => n > 1).map(([id]) => id);
  for (const id of twice.slice(0, 3)) {
    for (const s of p.services) {
      const lines = p.logs(s.name).split('\n').filter((l) => l.includes(`"${id}"`) || (l.includes('"level":40') && s.name.includes('s')));
      if (lines.length) process.stdout.write(`--- ${s.name} ${id}\n${lines.join('\n')}\n`);
    }
  }

  expect(counts.accepted).toBe(MESSAGES);
  expect(counts.lost).toBe(0);
  // Exactly one record per Nats-Msg-Id: the repeated publishes made none.
  expect(counts.records).toBe(MESSAGES);
  expect(new Set(all.map((r) => r.callId)).size).toBe(MESSAGES);
  expect(counts.succeeded + counts.dead).toBe(counts.accepted);
  expect(counts.notRun).toBe(0); // the function ran at least once per message
  // Never a second call for one Nats-Msg-Id (one record each, above), and no silent second run: a
  // scheduler that takes over a call uses the stored result of the attempt it lost. The function runs
  // again only when that result never reached NATS (the worker published it in the instant nats-server
  // went down: a core publish); that rerun is a recorded retry. Measured: 0 to 4 of 500.
  expect(counts.ranTwice).toBeLessThanOrEqual(counts.retried);
  expect(counts.retried).toBeLessThanOrEqual(Math.ceil(MESSAGES * 0.02));
  for (const [i, r] of finals) if (r.status === 'succeeded') expect(r.result).toEqual({ n: i, id: `job-${i}` });
  await remove('work');
});
