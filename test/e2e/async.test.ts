/**
 * Async invocations end to end (real nats-server with JetStream, scheduler,
 * worker VMs, gateway): 202 only once stored, callbacks, call records,
 * idempotent call ids, cancellation, retries with the OpenFaaS annotations
 * ending in `dead`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallRecord } from '../../contracts/bus.js';
import { CallbackReceiver } from '../helpers/callback-receiver.js';
import { TestPlatform } from '../helpers/platform.js';

let p: TestPlatform;
let rx: CallbackReceiver;

beforeAll(async () => {
  rx = await CallbackReceiver.start();
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '2', MAYFLY_ASYNC_RETRY_MIN_MS: '100', MAYFLY_ASYNC_RETRY_MAX_MS: '400' } });
  await p.waitForWorkers(['w1'], 1);
});

afterAll(async () => {
  await p?.stop();
  await rx?.close();
});

async function deploy(service: string, code: string, extra: Record<string, unknown> = {}) {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, code, ...extra }),
  });
  expect(res.status).toBe(202);
}

async function submit(service: string, body: string, headers: Record<string, string> = {}) {
  return fetch(`${p.gatewayUrl}/async-function/${service}`, {
    method: 'POST',
    headers: { 'x-callback-url': rx.url, 'content-type': 'text/plain', ...headers },
    body,
  });
}

async function record(callId: string): Promise<CallRecord> {
  return (await (await fetch(`${p.gatewayUrl}/system/invocations/${callId}`)).json()) as CallRecord;
}

async function waitFinal(callId: string, timeoutMs = 60_000): Promise<CallRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await record(callId);
    if (['succeeded', 'failed', 'dead', 'cancelled'].includes(r.status)) return r;
    if (Date.now() > deadline) throw new Error(`call ${callId} still ${r.status}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

describe('async invocations', () => {
  it('accepts with 202 + X-Call-Id, runs, records and calls back once', async () => {
    await deploy('upper', `export const handler = async (e) => { console.log('got', e.body); return { up: e.body.toUpperCase() }; };`);
    expect((await submit('nope', 'x')).status).toBe(404);
    const res = await submit('upper', 'hello');
    expect(res.status).toBe(202);
    const callId = res.headers.get('x-call-id')!;
    expect(await res.json()).toMatchObject({ callId, status: 'queued' });
    const r = await waitFinal(callId);
    expect(r).toMatchObject({ callId, function: 'upper', mode: 'async', status: 'succeeded', attempts: 1, statusCode: 200, result: { up: 'HELLO' } });
    expect(r.logs).toEqual([{ stream: 'stdout', line: 'got hello' }]);
    expect(['pool', 'clone', 'cold']).toContain(r.start);
    await rx.waitFor(() => rx.forCall(callId).length === 1, 10_000, 'the callback');
    const cb = rx.forCall(callId)[0]!;
    expect(cb.headers).toMatchObject({ 'x-function-name': 'upper', 'x-function-status': '200', 'x-retry': '0' });
    expect(JSON.parse(cb.body)).toEqual({ up: 'HELLO' });

    // sync calls get a record too
    const sync = await fetch(`${p.gatewayUrl}/function/upper`, { method: 'POST', body: 'sync' });
    const syncRecord = await record(sync.headers.get('x-call-id')!);
    expect(syncRecord).toMatchObject({ mode: 'sync', status: 'succeeded', result: { up: 'SYNC' } });
  });

  it('accepts a client-chosen call id once', async () => {
    const id = `idem-${Date.now()}`;
    const a = await submit('upper', 'once', { 'x-call-id': id });
    const b = await submit('upper', 'twice', { 'idempotency-key': id });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect(await b.json()).toMatchObject({ callId: id, duplicate: true });
    expect((await waitFinal(id)).result).toEqual({ up: 'ONCE' });
    await new Promise((r) => setTimeout(r, 1000));
    expect(rx.forCall(id).length).toBe(1);
  });

  it('cancels a call that has not started', async () => {
    await deploy('slow', `export const handler = async (e) => { await new Promise((r) => setTimeout(r, 3000)); return e.body; };`, {
      annotations: { 'com.mayfly.max_inflight': '1' },
    });
    const first = (await submit('slow', 'first')).headers.get('x-call-id')!;
    await new Promise((r) => setTimeout(r, 300));
    const second = (await submit('slow', 'second')).headers.get('x-call-id')!;
    const del = await fetch(`${p.gatewayUrl}/async-function/${second}`, { method: 'DELETE' });
    expect(del.status).toBe(202);
    expect((await waitFinal(first)).status).toBe('succeeded');
    const r = await record(second);
    expect(r).toMatchObject({ status: 'cancelled', attempts: 0 });
    expect((await fetch(`${p.gatewayUrl}/async-function/${first}`, { method: 'DELETE' })).status).toBe(409);
    expect((await fetch(`${p.gatewayUrl}/async-function/no-such-call`, { method: 'DELETE' })).status).toBe(404);
    await new Promise((r) => setTimeout(r, 1000));
    expect(rx.forCall(second)).toEqual([]);
  });

  it("retries the function's own error codes when annotated, then marks the call dead and lists it", async () => {
    await deploy('flaky', `export const handler = async () => ({ statusCode: 503, body: 'try later' });`, {
      annotations: { 'com.openfaas.retry.attempts': '3', 'com.openfaas.retry.codes': '503', 'com.openfaas.retry.min_wait': '100ms', 'com.openfaas.retry.max_wait': '300ms' },
    });
    const callId = (await submit('flaky', 'x')).headers.get('x-call-id')!;
    const r = await waitFinal(callId);
    expect(r).toMatchObject({ status: 'dead', attempts: 3, statusCode: 503 });
    await rx.waitFor(() => rx.forCall(callId).length === 1, 10_000, 'the callback of the dead call');
    expect(rx.forCall(callId)[0]!.headers).toMatchObject({ 'x-function-status': '503', 'x-retry': '2', 'x-retry-max': '4' });
    const dead = (await (await fetch(`${p.gatewayUrl}/system/invocations?function=flaky&status=dead`)).json()) as CallRecord[];
    expect(dead.map((d) => d.callId)).toContain(callId);
    expect((await fetch(`${p.gatewayUrl}/system/invocations?status=bogus`)).status).toBe(400);
  });
});
