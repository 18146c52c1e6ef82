/**
 * kvKeys (lib/kv-keys.ts) against a real nats-server: the keys of a bucket from
 * its stream's subject index, including keys deleted since (their delete
 * markers), after puts, deletes and updates; an empty bucket has none.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { startNatsServer, type NatsServerHandle } from '../../infra/nats/nats-server.js';
import { kvKeys } from '../../lib/kv-keys.js';

let dir: string;
let nats: NatsServerHandle;
let nc: NatsConnection;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfkv-'));
  nats = await startNatsServer({ storeDir: path.join(dir, 'nats'), logFile: path.join(dir, 'nats.log') });
  nc = await connect({ servers: nats.url });
});

afterAll(async () => {
  await nc?.close().catch(() => {});
  await nats?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('lists a bucket\'s keys after puts, deletes and updates, dotted keys included', async () => {
  const kv = await new Kvm(nc).create('kvkeys_test', { history: 1 });
  expect(await kvKeys(nc, 'kvkeys_test')).toEqual([]);
  for (let i = 0; i < 40; i++) await kv.put(`k${i}.part-${i % 3}`, String(i));
  for (let i = 0; i < 40; i += 4) await kv.delete(`k${i}.part-${i % 3}`);
  await kv.put('k1.part-1', 'updated');
  const keys = await kvKeys(nc, 'kvkeys_test');
  expect(keys.sort()).toEqual(Array.from({ length: 40 }, (_, i) => `k${i}.part-${i % 3}`).sort());
  // What is still there: the callers read each key and skip the delete markers.
  const live: string[] = [];
  for (const k of keys) if ((await kv.get(k))?.operation === 'PUT') live.push(k);
  expect(live).toHaveLength(30);
  expect(live).not.toContain('k0.part-0');
});
