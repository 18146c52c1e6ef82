/**
 * Triggers end to end (issue 15), on a real platform (nats-server, scheduler,
 * a worker with QEMU VMs, gateway) and a real NATS client as the publisher:
 * wildcard subjects, binary bodies and headers arrive intact in the guest; a
 * repeated Nats-Msg-Id runs once; results go to the reply subject; updating
 * `topic` moves the subscription and removing the function stops it; bad
 * annotations are 400s naming the annotation; a too-large message is recorded
 * failed with the reason; calls queued for a function that is deleted end
 * `cancelled`; a message published while no scheduler runs is delivered when
 * one comes back; GET /system/triggers and the next fire times of schedules.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import type { CallRecord } from '../../contracts/bus.js';
import type { TriggerList } from '../../contracts/triggers.js';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;
let nc: NatsConnection;
let js: JetStreamClient;

/** Returns what arrived: topic, headers, body and its encoding. */
const ECHO = `export const handler = async (e) => ({ topic: e.topic, headers: e.headers, body: e.body, b64: e.isBase64Encoded });`;

beforeAll(async () => {
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '1', MAYFLY_TRIGGER_MAX_BODY_BYTES: '65536' } });
  await p.waitForWorkers(['w1'], 1);
  nc = await connect({ servers: p.nats.url });
  js = jetstream(nc);
});

afterAll(async () => {
  await nc?.close().catch(() => {});
  await p?.stop();
});

async function deploy(method: 'POST' | 'PUT', service: string, annotations: Record<string, string>, code = ECHO): Promise<Response> {
  return fetch(`${p.gatewayUrl}/system/functions`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, isolation: 'per-function', timeout: 10, annotations, code }),
  });
}

async function record(callId: string): Promise<CallRecord | null> {
  const res = await fetch(`${p.gatewayUrl}/system/invocations/${callId}`);
  return res.status === 200 ? ((await res.json()) as CallRecord) : null;
}

async function finalRecord(callId: string, timeoutMs = 90_000): Promise<CallRecord> {
  let last: CallRecord | null = null;
  await p.waitFor(async () => {
    last = await record(callId);
    return last !== null && ['succeeded', 'failed', 'dead', 'cancelled'].includes(last.status);
  }, timeoutMs, `final record of ${callId}`);
  return last!;
}

async function calls(fn: string): Promise<CallRecord[]> {
  return (await (await fetch(`${p.gatewayUrl}/system/invocations?function=${fn}&limit=1000`)).json()) as CallRecord[];
}

/** Publishes durably (JetStream ack) with an optional Nats-Msg-Id and headers. */
async function publish(subject: string, data: Uint8Array | string, msgId?: string, hdrs: Record<string, string[]> = {}): Promise<{ duplicate: boolean }> {
  const h = natsHeaders();
  for (const [k, vs] of Object.entries(hdrs)) for (const v of vs) h.append(k, v);
  const ack = await js.publish(subject, typeof data === 'string' ? new TextEncoder().encode(data) : data, {
    headers: h,
    ...(msgId ? { msgID: msgId } : {}),
  });
  return { duplicate: ack.duplicate };
}

/** The text of every live scheduler's /metrics (from the Prometheus targets file the scheduler writes). */
async function schedulerMetrics(): Promise<string> {
  const groups = JSON.parse(fs.readFileSync(p.metricsTargetsFile(), 'utf8')) as { targets: string[]; labels: Record<string, string> }[];
  let text = '';
  for (const g of groups.filter((x) => x.labels.service === 'scheduler')) {
    const res = await fetch(`http://${g.targets[0]}${g.labels.__metrics_path__ ?? '/metrics'}`).catch(() => null);
    if (res?.ok) text += await res.text();
  }
  return text;
}

describe('subject triggers', () => {
  it('wildcard subjects, binary bodies and headers arrive intact in the guest; a repeated Nats-Msg-Id runs once', async () => {
    expect((await deploy('POST', 'echo', { topic: 'orders.*.created, audit.>' })).status).toBe(202);
    const binary = new Uint8Array(256).map((_, i) => i); // every byte value, not UTF-8
    await publish('orders.eu.created', binary, 'bin-1', { 'X-Tenant': ['acme'], 'X-Multi': ['a', 'b'], 'Content-Type': ['application/octet-stream'] });
    expect((await publish('orders.eu.created', binary, 'bin-1')).duplicate).toBe(true);
    await publish('audit.login.ok', '{"user":"ann"}', 'text-1', { 'Content-Type': ['application/json'] });
    await publish('orders.us.created', 'héllo ✓', 'text-2');

    const bin = await finalRecord('echo.m-bin-1');
    expect(bin).toMatchObject({ status: 'succeeded', mode: 'async', trigger: 'subject:orders.*.created', attempts: 1 });
    const r = bin.result as { topic: string; headers: Record<string, string>; body: string; b64: boolean };
    expect(r.topic).toBe('orders.eu.created');
    expect(r.b64).toBe(true);
    expect(Buffer.from(r.body, 'base64').equals(Buffer.from(binary))).toBe(true);
    expect(r.headers).toMatchObject({ 'x-topic': 'orders.eu.created', 'x-tenant': 'acme', 'x-multi': 'a, b', 'x-nats-msg-id': 'bin-1', 'x-call-id': 'echo.m-bin-1' });

    const audit = await finalRecord('echo.m-text-1');
    expect(audit.result).toMatchObject({ topic: 'audit.login.ok', body: '{"user":"ann"}', b64: false, headers: { 'content-type': 'application/json' } });
    expect(audit.trigger).toBe('subject:audit.>');
    expect((await finalRecord('echo.m-text-2')).result).toMatchObject({ topic: 'orders.us.created', body: 'héllo ✓', b64: false });

    // The duplicate publish was dropped by the stream; a re-publish after the window would find the final record.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await calls('echo')).filter((c) => c.callId === 'echo.m-bin-1')).toHaveLength(1);
    // Without Nats-Msg-Id every message is its own call.
    await publish('orders.x.created', 'a');
    await publish('orders.x.created', 'a');
    await p.waitFor(async () => (await calls('echo')).filter((c) => c.status === 'succeeded').length === 5, 60_000, '5 calls of echo');

    const list = (await (await fetch(`${p.gatewayUrl}/system/triggers`)).json()) as TriggerList;
    expect(list.subjects).toEqual(
      expect.arrayContaining([
        { subject: 'orders.*.created', functions: ['echo'] },
        { subject: 'audit.>', functions: ['echo'] },
      ]),
    );
  });

  it('results go to com.mayfly.reply_subject once, so functions chain', async () => {
    const results: { callId: string; body: string }[] = [];
    const sub = nc.subscribe('chain.results', {
      callback: (_e, m) => {
        results.push({ callId: m.headers?.get('x-call-id') ?? '', body: new TextDecoder().decode(m.data) });
      },
    });
    expect(
      (await deploy('POST', 'upper', { topic: 'chain.in', 'com.mayfly.reply_subject': 'chain.results' }, `export const handler = async (e) => e.body.toUpperCase();`))
        .status,
    ).toBe(202);
    // The next link: a function triggered by the results subject.
    expect((await deploy('POST', 'sink', { topic: 'chain.results' })).status).toBe(202);
    await publish('chain.in', 'abc', 'c1');
    const rec = await finalRecord('upper.m-c1');
    expect(rec.status).toBe('succeeded');
    await p.waitFor(() => results.length >= 1, 10_000, 'the result on chain.results');
    await new Promise((r) => setTimeout(r, 500));
    expect(results).toEqual([{ callId: 'upper.m-c1', body: '"ABC"' }]); // the function's value as JSON, like an HTTP callback
    expect((await record('upper.m-c1'))?.callbackStatus).toBe('sent');
    const next = await finalRecord('sink.m-upper.m-c1');
    expect(next.result).toMatchObject({ topic: 'chain.results', body: '"ABC"', headers: { 'x-function-name': 'upper', 'x-mayfly-status': 'succeeded' } });
    // A message may name its own reply subject (header Mayfly-Reply-Subject).
    const other: string[] = [];
    const sub2 = nc.subscribe('chain.other', { callback: (_e, m) => void other.push(new TextDecoder().decode(m.data)) });
    await publish('chain.in', 'xyz', 'c2', { 'Mayfly-Reply-Subject': ['chain.other'] });
    await p.waitFor(() => other.length >= 1, 30_000, 'the result on chain.other');
    expect(other).toEqual(['"XYZ"']);
    sub2.unsubscribe();
    sub.unsubscribe();
  });

  it('updating topic moves the subscription; removing the function stops it', async () => {
    expect((await deploy('POST', 'mover', { topic: 'move.old' })).status).toBe(202);
    await publish('move.old', 'one', 'mv-1');
    expect((await finalRecord('mover.m-mv-1')).status).toBe('succeeded');

    expect((await deploy('PUT', 'mover', { topic: 'move.new' })).status).toBe(202);
    await new Promise((r) => setTimeout(r, 1500)); // the schedulers' view refreshes every MAYFLY_TRIGGER_REFRESH_MS
    await publish('move.new', 'two', 'mv-2');
    expect((await finalRecord('mover.m-mv-2')).result).toMatchObject({ topic: 'move.new', body: 'two' });
    // The old subject is no longer captured: a durable publish there finds no stream.
    await expect(publish('move.old', 'three', 'mv-3')).rejects.toThrow();
    expect(await record('mover.m-mv-3')).toBeNull();

    const del = await fetch(`${p.gatewayUrl}/system/functions`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ functionName: 'mover' }),
    });
    expect(del.status).toBe(202);
    await expect(publish('move.new', 'four', 'mv-4')).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 1500));
    expect(await record('mover.m-mv-4')).toBeNull();
    const list = (await (await fetch(`${p.gatewayUrl}/system/triggers`)).json()) as TriggerList;
    expect(list.subjects.some((s) => s.functions.includes('mover'))).toBe(false);
  });

  it('rejects an invalid subject or schedule with a 400 naming the annotation', async () => {
    for (const [annotations, name] of [
      [{ topic: 'orders..created' }, 'topic'],
      [{ topic: 'orders.>.x' }, 'topic'],
      [{ topic: 'mayfly.async.submit' }, 'topic'],
      [{ topic: '>' }, 'topic'],
      [{ topic: 'cron-function', schedule: '61 * * * *' }, 'schedule'],
      [{ topic: 'cron-function', schedule: '@every 0s' }, 'schedule'],
      [{ schedule: '*/5 * * * *' }, 'topic'],
      [{ topic: 'a.b', 'com.mayfly.reply_subject': 'x.*' }, 'com.mayfly.reply_subject'],
    ] as const) {
      const res = await deploy('POST', 'bad', annotations);
      const body = (await res.json()) as { code: string; error: string; field: string };
      expect(res.status, JSON.stringify(annotations)).toBe(400);
      expect(body.code).toBe('INVALID_ANNOTATION');
      expect(body.field).toBe(`annotations.${name}`);
      expect(body.error).toContain(`annotation "${name}"`);
    }
    // A subject another JetStream stream captures already: nats-server refuses the overlap, so does the deploy.
    await (await jetstreamManager(nc)).streams.add({ name: 'USER_OWN', subjects: ['user.>'] });
    const res = await deploy('POST', 'bad', { topic: 'user.signup' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { field: string; error: string }).error).toContain('annotation "topic"');
    expect((await fetch(`${p.gatewayUrl}/system/function/bad`)).status).toBe(404);
  });

  it('records a message above the body limit as failed with the reason', async () => {
    expect((await deploy('POST', 'small', { topic: 'big.in' })).status).toBe(202);
    await publish('big.in', new Uint8Array(70_000), 'big-1');
    const rec = await finalRecord('small.m-big-1');
    expect(rec).toMatchObject({ status: 'failed', statusCode: 413, attempts: 0 });
    expect(rec.error).toContain('MAYFLY_TRIGGER_MAX_BODY_BYTES');
  });

  it('exports per-trigger metrics', async () => {
    const text = await schedulerMetrics();
    expect(text).toMatch(/mayfly_trigger_invocations_total\{trigger="subject:orders\.\*\.created",function_name="echo"\} [1-9]/);
    expect(text).toMatch(/mayfly_trigger_messages_total\{trigger="subject:audit\.>"\} [1-9]/);
    expect(text).toMatch(/mayfly_trigger_calls_finished_total\{trigger="subject:orders\.\*\.created",function_name="echo",status="succeeded"\} [1-9]/);
    expect(text).toMatch(/mayfly_trigger_rejected_total\{trigger="subject:big\.in",function_name="small",reason="too_large"\} 1/);
    expect(text).toMatch(/mayfly_trigger_lag_messages\{state="waiting"\} 0/);
  });

  it('ends calls queued for a deleted function as cancelled', async () => {
    // One slow call at a time (com.mayfly.max_inflight) keeps the others queued while the function is deleted.
    const code = `export const handler = async () => { await new Promise((r) => setTimeout(r, 3000)); return 'ok'; };`;
    expect((await deploy('POST', 'doomed', { topic: 'doomed.in', 'com.mayfly.max_inflight': '1' }, code)).status).toBe(202);
    for (let i = 0; i < 4; i++) await publish('doomed.in', String(i), `d-${i}`);
    await p.waitFor(async () => (await record('doomed.m-d-0'))?.status === 'running', 60_000, 'the first call running');
    const del = await fetch(`${p.gatewayUrl}/system/functions`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ functionName: 'doomed' }),
    });
    expect(del.status).toBe(202);
    const finals = await Promise.all([0, 1, 2, 3].map((i) => finalRecord(`doomed.m-d-${i}`)));
    const cancelled = finals.filter((r) => r.status === 'cancelled');
    expect(cancelled.length).toBeGreaterThanOrEqual(2);
    for (const r of cancelled) expect(r.error).toContain('deleted');
  });

  it('delivers a message published while no scheduler runs once one comes back', async () => {
    expect((await deploy('POST', 'later', { topic: 'later.in' })).status).toBe(202);
    await p.kill('scheduler', 'SIGTERM');
    await publish('later.in', 'while down', 'l-1');
    await new Promise((r) => setTimeout(r, 500));
    expect(await record('later.m-l-1')).toBeNull(); // captured, not yet mapped
    p.startService('scheduler', 'scheduler-2');
    expect((await finalRecord('later.m-l-1')).result).toMatchObject({ body: 'while down' });
  });
});

describe('schedules', () => {
  it('shows the next fire times in GET /system/function/NAME, the list and /system/triggers', async () => {
    expect((await deploy('POST', 'nightly', { topic: 'cron-function', schedule: '0 3 * * *' })).status).toBe(202);
    const fn = (await (await fetch(`${p.gatewayUrl}/system/function/nightly`)).json()) as { schedule: { expression: string; nextRuns: string[] } };
    expect(fn.schedule.expression).toBe('0 3 * * *');
    expect(fn.schedule.nextRuns).toHaveLength(5);
    for (const t of fn.schedule.nextRuns) expect(t).toMatch(/T03:00:00\.000Z$/);
    const list = (await (await fetch(`${p.gatewayUrl}/system/functions`)).json()) as { name: string; schedule?: unknown }[];
    expect(list.find((f) => f.name === 'nightly')?.schedule).toEqual(fn.schedule);
    const triggers = (await (await fetch(`${p.gatewayUrl}/system/triggers`)).json()) as TriggerList;
    expect(triggers.schedules.find((s) => s.function === 'nightly')).toMatchObject({ schedule: '0 3 * * *', catchUp: false, nextRuns: fn.schedule.nextRuns });
    const next = Date.parse(fn.schedule.nextRuns[0]!) / 1000;
    await p.waitFor(async () => (await schedulerMetrics()).includes(`mayfly_schedule_next_fire_timestamp_seconds{function_name="nightly"} ${next}`), 10_000, 'the next-fire gauge');
  });

  it('fires @every ticks with the tick in the event', async () => {
    expect((await deploy('POST', 'ticker', { topic: 'cron-function', schedule: '@every 2s' })).status).toBe(202);
    await p.waitFor(async () => (await calls('ticker')).filter((c) => c.status === 'succeeded').length >= 2, 60_000, 'two ticks');
    const done = (await calls('ticker')).filter((c) => c.status === 'succeeded');
    for (const c of done) {
      const tickMs = Number(c.callId.replace('ticker.tick-', ''));
      expect(tickMs % 2000).toBe(0);
      expect(c.trigger).toBe('schedule');
      expect(c.result).toMatchObject({ topic: 'cron-function', headers: { 'x-topic': 'cron-function', 'x-mayfly-tick': new Date(tickMs).toISOString() } });
    }
    await fetch(`${p.gatewayUrl}/system/functions`, { method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ functionName: 'ticker' }) });
  });

  it('fires no burst of missed ticks after downtime, unless the function asks for catch-up', async () => {
    expect((await deploy('POST', 'gap', { topic: 'cron-function', schedule: '@every 1s' })).status).toBe(202);
    expect((await deploy('POST', 'catchup', { topic: 'cron-function', schedule: '@every 1s', 'com.mayfly.schedule_catchup': 'true' })).status).toBe(202);
    await p.waitFor(async () => (await calls('catchup')).length >= 2 && (await calls('gap')).length >= 2, 30_000, 'ticks of both');
    const down = p.services.find((s) => s.name.startsWith('scheduler') && s.proc.exitCode === null)!;
    await p.kill(down.name, 'SIGKILL');
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 5000));
    p.startService('scheduler', 'scheduler-3');
    await new Promise((r) => setTimeout(r, 4000));
    for (const name of ['gap', 'catchup']) {
      await fetch(`${p.gatewayUrl}/system/functions`, { method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ functionName: name }) });
    }
    const ticksOf = async (fn: string) =>
      (await calls(fn)).map((c) => Number(c.callId.replace(`${fn}.tick-`, ''))).sort((a, b) => a - b);
    const gaps = (ts: number[]) => ts.slice(1).map((t, i) => t - ts[i]!);
    const gap = await ticksOf('gap');
    const caught = await ticksOf('catchup');
    // Without catch-up: the ticks of the 5 s without a scheduler never run.
    expect(Math.max(...gaps(gap))).toBeGreaterThanOrEqual(4000);
    expect(gap.filter((t) => t > t0 && t < t0 + 4000)).toHaveLength(0);
    // With catch-up: every second is there, the missed ones fired when the scheduler came back.
    expect(Math.max(...gaps(caught))).toBe(1000);
    expect(caught.filter((t) => t > t0 && t < t0 + 4000).length).toBeGreaterThanOrEqual(4);
    const late = (await calls('catchup')).filter((c) => Date.parse(c.startedAt ?? c.queuedAt) - Number(c.callId.replace('catchup.tick-', '')) > 2000);
    expect(late.length).toBeGreaterThanOrEqual(3); // they ran late, after the downtime
  });
});
