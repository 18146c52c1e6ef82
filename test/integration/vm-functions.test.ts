/**
 * The VM layer with real QEMU guests: handlers run inside the guest, in every
 * module shape users write, with results, errors, logs, deadlines and
 * pause/unpause. No fake driver anywhere. The whole suite runs on every guest
 * kernel the project ships (Debian's cloud kernel and the minimized tinyx one).
 */
import os from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InvocationError, type GuestSession } from '../../worker/guest-session.js';
import type { VmHost } from '../../worker/vm-host.js';
import { childQemuPids, isAlive, socketsUnder } from '../helpers/processes.js';
import { event, fn, openTestHost, TEST_KERNELS } from '../helpers/vm-host.js';

describe.each(TEST_KERNELS)('a handler in a real VM (%s kernel)', (kernel) => {
  let host: VmHost;
  let runDir: string;

  beforeAll(async () => {
    ({ host, runDir } = await openTestHost({ kernel }));
    expect(host.image.kernelKind).toBe(kernel);
  });

  afterAll(async () => {
    await host?.close();
    expect(childQemuPids()).toEqual([]);
    expect(socketsUnder(runDir)).toEqual([]);
  });

  afterEach(() => {
    // runOnce destroys its VM before it returns, failure or not.
    expect(host.driver.liveVmIds()).toEqual([]);
    expect(childQemuPids()).toEqual([]);
  });

  async function run(code: string, body = '', timeoutMs = 20_000) {
    return host.runOnce(fn(code), { callId: `call-${Math.random().toString(36).slice(2)}`, event: event(body), timeoutMs });
  }

  it('computes from its event inside the guest and the result comes back intact', async () => {
    const code = `
      import os from 'node:os';
      export async function handler(event, context) {
        const { numbers, text } = JSON.parse(event.body);
        console.log('summing', numbers.length, 'numbers');
        return {
          sum: numbers.reduce((a, b) => a + b, 0),
          text, release: os.release(), pid: process.pid,
          method: event.method, query: event.query, fn: context.functionName, callId: context.callId,
          remaining: context.getRemainingTimeInMillis(), deadline: context.deadline, mem: context.memoryLimitInMB,
        };
      }`;
    const numbers = Array.from({ length: 1000 }, (_, i) => i * 3 - 700);
    const text = 'héllo, wörld 🦋 "quoted" \\n \u0000 end';
    const { outcome, timings } = await host.runOnce(fn(code, 'summer'), {
      callId: 'call-sum-1',
      event: event(JSON.stringify({ numbers, text }), { method: 'PUT', query: { a: '1', b: ['x', 'y'] } }),
      timeoutMs: 20_000,
    });
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    const v = outcome.value as Record<string, unknown>;
    expect(v.sum).toBe(numbers.reduce((a, b) => a + b, 0));
    expect(v.text).toBe(text);
    // It ran in the guest: another kernel, and the agent is the guest's init process.
    expect(v.release).not.toBe(os.release());
    expect(v.release).toBe(host.image.kernelRelease);
    expect(v.pid).toBe(1);
    expect(v).toMatchObject({ method: 'PUT', query: { a: '1', b: ['x', 'y'] }, fn: 'summer', callId: 'call-sum-1', mem: 128 });
    expect(v.remaining).toBeGreaterThan(15_000);
    expect(v.remaining).toBeLessThanOrEqual(20_000);
    expect(outcome.logs).toEqual([{ stream: 'stdout', line: 'summing 1000 numbers' }]);
    expect(timings.bootMs).toBeGreaterThan(0);
  });

  it.each([
    ['ESM export const', `export const handler = async (event) => ({ shape: 'esm-const', body: event.body });`, 'esm-const'],
    ['ESM export default', `export default async function (event) { return { shape: 'esm-default', body: event.body }; }`, 'esm-default'],
    ['CommonJS exports.handler', `exports.handler = async (event) => ({ shape: 'cjs-exports', body: event.body });`, 'cjs-exports'],
    [
      'CommonJS module.exports',
      `const util = require('node:util');\nmodule.exports = async function (event) { return { shape: util.format('%s', 'cjs-module'), body: event.body }; };`,
      'cjs-module',
    ],
  ])('loads a %s handler', async (_name, code, shape) => {
    const { outcome } = await run(code, 'ping');
    expect(outcome).toMatchObject({ ok: true, value: { shape, body: 'ping' } });
  });

  it('returns statusCode/headers/body objects as they are, and undefined as no value', async () => {
    const code = `
      exports.handler = async (event) => {
        if (event.body === 'undefined') return undefined;
        return { statusCode: 201, headers: { 'x-made-by': 'mayfly' }, body: 'created' };
      };`;
    const { outcome } = await run(code, 'x');
    expect(outcome).toMatchObject({ ok: true, value: { statusCode: 201, headers: { 'x-made-by': 'mayfly' }, body: 'created' } });
  });

  it('keeps serving after a handler throws, rejects or returns undefined, and pauses/unpauses', async () => {
    const code = `
      export async function handler(event) {
        console.error('got', event.body);
        if (event.body === 'throw') throw new TypeError('bad input: ' + event.body);
        if (event.body === 'reject') return Promise.reject(new RangeError('rejected'));
        if (event.body === 'async-throw') { setTimeout(() => { throw new Error('escaped the promise chain'); }, 1); return new Promise(() => {}); }
        if (event.body === 'undefined') return undefined;
        return 'fine:' + event.body;
      }`;
    const session: GuestSession = await host.prepare(128);
    try {
      await session.boot();
      await session.init(fn(code));
      const call = (body: string, id: string) => session.invoke({ callId: id, event: event(body), timeoutMs: 10_000 });

      const thrown = await call('throw', 'c1');
      expect(thrown.ok).toBe(false);
      if (!thrown.ok) expect(thrown.error).toMatchObject({ name: 'TypeError', message: 'bad input: throw' });
      expect(thrown.logs).toEqual([{ stream: 'stderr', line: 'got throw' }]);

      const rejected = await call('reject', 'c2');
      expect(rejected).toMatchObject({ ok: false, error: { name: 'RangeError', message: 'rejected' } });

      const escaped = await call('async-throw', 'c3');
      expect(escaped).toMatchObject({ ok: false, error: { message: 'escaped the promise chain' } });

      const undef = await call('undefined', 'c4');
      expect(undef.ok).toBe(true);
      expect('value' in undef).toBe(false);

      expect(await call('again', 'c5')).toMatchObject({ ok: true, value: 'fine:again' });

      await host.driver.pause(session.vm);
      expect(await host.driver.queryState(session.vm)).toBe('paused');
      // While paused the guest cannot answer.
      const whilePaused = call('paused', 'c6');
      const early = await Promise.race([whilePaused.then(() => 'answered'), new Promise((r) => setTimeout(() => r('silent'), 500))]);
      expect(early).toBe('silent');
      await host.driver.start(session.vm);
      expect(await host.driver.queryState(session.vm)).toBe('running');
      expect(await whilePaused).toMatchObject({ ok: true, value: 'fine:paused' });
    } finally {
      await session.destroy('test done');
    }
  });

  it('reports a module that fails to load, with its error', async () => {
    const err = await run(`export const handler = ;`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvocationError);
    expect((err as InvocationError).code).toBe('INIT_FAILED');
    expect((err as InvocationError).guestError?.name).toBe('SyntaxError');

    const missing = await run(`export const notTheHandler = 1;`).catch((e: unknown) => e);
    expect((missing as InvocationError).code).toBe('INIT_FAILED');
    expect((missing as InvocationError).message).toMatch(/no function named "handler"/);
  });

  it('kills a handler that never returns at its deadline, and the VM is gone', async () => {
    const session = await host.prepare(128);
    const pid = childQemuPids()[0];
    expect(pid).toBeDefined();
    try {
      await session.boot();
      await session.init(fn(`export async function handler() { for (;;) {} }`));
      const t0 = performance.now();
      const err = await session
        .invoke({ callId: 'spin', event: event(''), timeoutMs: 2000 })
        .catch((e: unknown) => e);
      const waited = performance.now() - t0;
      expect(err).toBeInstanceOf(InvocationError);
      expect((err as InvocationError).code).toBe('FUNCTION_TIMEOUT');
      expect(waited).toBeGreaterThanOrEqual(1990);
      expect(waited).toBeLessThan(10_000);
      await session.vm.exited;
      expect(isAlive(pid!)).toBe(false);
      expect(socketsUnder(runDir)).toEqual([]);
    } finally {
      await session.destroy('test done');
    }
  });
});
