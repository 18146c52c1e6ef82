/**
 * The scheduler against a real nats-server, with hosts played by NATS
 * responders (the placement logic is what is under test here; real workers
 * are in the e2e tests): a preferred host that refuses or stays silent is
 * skipped and the call lands on the next; with no host, the caller gets a
 * clear NO_CAPACITY.
 */
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { invokeRequestSchema, invokeResultSchema, SUBJECTS, type Heartbeat } from '../../contracts/bus.js';
import { loadConfig } from '../../contracts/config.js';
import type { FunctionRecord } from '../../contracts/functions.js';
import { startNatsServer, type NatsServerHandle } from '../../infra/nats/nats-server.js';
import { createLogger } from '../../lib/logger.js';
import { jsonCodec } from '../../lib/nats.js';
import { startScheduler, type SchedulerService } from '../../scheduler/service.js';

let nats: NatsServerHandle;
let nc: NatsConnection;
let scheduler: SchedulerService;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfs-'));
const offers: string[] = [];
const timers: NodeJS.Timeout[] = [];

const fn: FunctionRecord = {
  name: 'f', runtime: 'node', handler: 'handler', codeHash: 'h', codeBytes: 1, envVars: {}, memoryMiB: 128,
  timeoutMs: 1000, isolation: 'per-function', image: 'mayfly/node', labels: {}, annotations: {}, secrets: [], version: 1,
  createdAt: '', updatedAt: '',
};

function host(hostId: string, hb: Partial<Heartbeat>, behaviour: 'refuse' | 'silent' | 'accept'): void {
  const beat = () =>
    nc.publish(SUBJECTS.heartbeat, jsonCodec.encode({
      hostId, sentAt: Date.now(), memoryBudgetMiB: 4096, memoryReservedMiB: 0, inflight: 0, vms: {}, warm: [], pools: {}, ...hb,
    }));
  beat();
  timers.push(setInterval(beat, 200));
  nc.subscribe(SUBJECTS.hostInvoke(hostId), {
    callback: (_err, msg) => {
      offers.push(hostId);
      const req = invokeRequestSchema.parse(jsonCodec.decode(msg.data));
      if (behaviour === 'silent') return;
      if (behaviour === 'refuse') return void msg.respond(jsonCodec.encode({ accepted: false, hostId, reason: 'host memory budget is full' }));
      msg.respond(jsonCodec.encode({ accepted: true, hostId }));
      nc.publish(req.replyTo, jsonCodec.encode({ callId: req.callId, hostId, start: 'warm', durationMs: 1, logs: [], outcome: { kind: 'value', value: hostId } }));
    },
  });
}

beforeAll(async () => {
  nats = await startNatsServer({ storeDir: path.join(dir, 'nats') });
  nc = await connect({ servers: nats.url });
  scheduler = await startScheduler(
    loadConfig({ MAYFLY_NATS_URL: nats.url, MAYFLY_PROMETHEUS_SD_FILE: 'off', MAYFLY_OFFER_TIMEOUT_MS: '500', MAYFLY_PLACEMENT_TIMEOUT_MS: '1500', MAYFLY_HOST_TTL_MS: '2000' }),
    createLogger('scheduler-test'),
  );
});

afterAll(async () => {
  timers.forEach(clearInterval);
  await scheduler?.stop();
  await nc?.close();
  await nats?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function invoke(callId: string) {
  const msg = await nc.request(
    SUBJECTS.invoke,
    jsonCodec.encode({ callId, fn, event: { method: 'GET', path: '/', query: {}, headers: {}, body: '', isBase64Encoded: false }, receivedAt: Date.now() }),
    { timeout: 10_000 },
  );
  return invokeResultSchema.parse(jsonCodec.decode(msg.data));
}

it('answers NO_CAPACITY when no host is alive', async () => {
  const r = await invoke('c0');
  expect(r.outcome).toMatchObject({ kind: 'platform', code: 'NO_CAPACITY' });
  expect((r.outcome as { message: string }).message).toMatch(/no worker hosts are alive/);
});

it('skips a host that refuses and one that stays silent, and the call lands on the next', async () => {
  host('full', { warm: ['f@1'] }, 'refuse'); // ranked first: it has a warm VM of f
  host('mute', { pools: { node: 1 } }, 'silent'); // ranked second: it has a pooled VM
  host('free', {}, 'accept');
  await new Promise((r) => setTimeout(r, 500));
  expect(scheduler.hosts().map((h) => h.hostId).sort()).toEqual(['free', 'full', 'mute']);
  offers.length = 0;
  const r = await invoke('c1');
  expect(r).toMatchObject({ hostId: 'free', outcome: { kind: 'value', value: 'free' } });
  expect(offers).toEqual(['full', 'mute', 'free']);
});
