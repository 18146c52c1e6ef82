/**
 * Hostile guests: a function that writes straight onto the guest channel (fd 3
 * in the guest) or floods its logs is cut off with a clear error, its VM is
 * destroyed, and another VM on the same worker keeps answering throughout.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvocationError, type GuestSession } from '../../worker/guest-session.js';
import type { VmHost } from '../../worker/vm-host.js';
import { childQemuPids, socketsUnder } from '../helpers/processes.js';
import { event, fn, openTestHost } from '../helpers/vm-host.js';

let host: VmHost;
let runDir: string;
let bystander: GuestSession;

beforeAll(async () => {
  ({ host, runDir } = await openTestHost());
  bystander = await host.prepare(128);
  await bystander.boot();
  await bystander.init(fn(`export async function handler(e) { return 'still here ' + e.body; }`, 'bystander'));
});

afterAll(async () => {
  await bystander?.destroy('test done');
  await host?.close();
  expect(childQemuPids()).toEqual([]);
  expect(socketsUnder(runDir)).toEqual([]);
});

const attacks: Array<[string, string, string, RegExp]> = [
  [
    'a 100 MB frame',
    `import fs from 'node:fs';
     export async function handler() {
       const b = Buffer.alloc(100 * 1024 * 1024, 0x41);
       b[0] = 0x4d; b[1] = 0x46; b.writeUInt32BE(b.length - 6, 2);
       fs.writeSync(3, b);
       return 'sent';
     }`,
    'GUEST_FRAME_TOO_LARGE',
    /frame of 104857594 bytes exceeds the limit/,
  ],
  [
    'garbage bytes',
    `import fs from 'node:fs';
     export async function handler() { fs.writeSync(3, Buffer.from([0, 255, 1, 2, 3, 0x47, 0x41, 0x52, 0x42])); return 'sent'; }`,
    'GUEST_BAD_FRAME',
    /bad frame magic/,
  ],
  [
    'a well-formed frame that breaks the protocol',
    `import fs from 'node:fs';
     export async function handler() {
       const p = Buffer.from(JSON.stringify({ type: 'result', callId: 'x', ok: 'yes', value: 1 }));
       const h = Buffer.alloc(6); h[0] = 0x4d; h[1] = 0x46; h.writeUInt32BE(p.length, 2);
       fs.writeSync(3, Buffer.concat([h, p]));
       return new Promise(() => {});
     }`,
    'GUEST_BAD_MESSAGE',
    /invalid message/,
  ],
  [
    'a log flood',
    `export async function handler() { const line = 'x'.repeat(1000); for (;;) console.log(line); }`,
    'GUEST_LOG_LIMIT',
    /more than 1048576 bytes or 10000 lines of logs/,
  ],
];

describe('hostile guests', () => {
  it('are cut off with a clear error while another VM keeps working', async () => {
    let stop = false;
    const bystanderAnswers: unknown[] = [];
    const bystanderLoop = (async () => {
      for (let i = 0; !stop; i++) {
        const r = await bystander.invoke({ callId: `b${i}`, event: event(String(i)), timeoutMs: 30_000 });
        bystanderAnswers.push(r.ok ? r.value : r.error);
        await new Promise((res) => setTimeout(res, 100));
      }
    })();

    const results = await Promise.all(
      attacks.map(async ([name, code]) => {
        const session = await host.prepare(128);
        try {
          await session.boot();
          await session.init(fn(code, 'hostile'));
          const err = await session.invoke({ callId: 'attack', event: event(''), timeoutMs: 60_000 }).catch((e: unknown) => e);
          await session.vm.exited;
          return { name, err };
        } finally {
          await session.destroy('test done');
        }
      }),
    );
    stop = true;
    await bystanderLoop;

    for (const [i, [name, , code, message]] of attacks.entries()) {
      const { err } = results[i]!;
      expect(err, name).toBeInstanceOf(InvocationError);
      expect((err as InvocationError).code, name).toBe(code);
      expect((err as InvocationError).message, name).toMatch(message);
    }
    // Only the bystander is left, and it answered every call while the attacks ran.
    expect(host.driver.liveVmIds()).toEqual([bystander.vm.id]);
    expect(bystanderAnswers.length).toBeGreaterThan(3);
    bystanderAnswers.forEach((a, i) => expect(a).toBe(`still here ${i}`));
    expect(await bystander.invoke({ callId: 'last', event: event('end'), timeoutMs: 30_000 })).toMatchObject({
      ok: true,
      value: 'still here end',
    });
  });
});
