/**
 * A VM that dies before the handler is called is the host's fault, not the
 * function's: the VM manager starts the call once more on a fresh VM (real
 * QEMU VMs; the pooled VM's QEMU is SIGKILLed between admission and start).
 * A function that fails to load is not retried.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FunctionRecord } from '../../contracts/functions.js';
import { createLogger } from '../../lib/logger.js';
import { InvocationError } from '../../worker/guest-session.js';
import { VmManager, vmFailedToStart } from '../../worker/vm-manager.js';
import type { VmHost } from '../../worker/vm-host.js';
import { childQemuPids } from '../helpers/processes.js';
import { event, openTestHost } from '../helpers/vm-host.js';

const fn: FunctionRecord = {
  name: 'retry', runtime: 'node', handler: 'handler', codeHash: 'h', codeBytes: 1, envVars: {}, memoryMiB: 128,
  timeoutMs: 20_000, isolation: 'per-request', image: 'mayfly/node', labels: {}, annotations: {}, secrets: [], version: 1,
  createdAt: '', updatedAt: '',
};
const CODE = `export const handler = async (e) => ({ got: e.body, pid: process.pid });`;

let host: VmHost;
let mgr: VmManager;

beforeAll(async () => {
  ({ host } = await openTestHost());
  mgr = new VmManager(host, { memoryBudgetMiB: 4096, poolSize: 1, poolMax: 1, poolFunctionMiB: 128, warmTtlMs: 1000, clones: true }, createLogger('test'));
  mgr.start();
  const deadline = Date.now() + 120_000;
  while (mgr.stats().vms.pool < 1) {
    if (Date.now() > deadline) throw new Error('the pool did not fill');
    await new Promise((r) => setTimeout(r, 100));
  }
});

afterAll(async () => {
  await mgr?.close();
  expect(childQemuPids()).toEqual([]);
});

describe('a VM that fails while starting', () => {
  it('is replaced by a fresh VM once, and the call succeeds', async () => {
    const pooled = childQemuPids();
    expect(pooled).toHaveLength(1);
    const r = mgr.reserve(fn);
    expect(r).not.toBeNull();
    process.kill(pooled[0]!, 'SIGKILL'); // the admitted pool VM dies before it is started
    const lease = await r!.acquire(fn, { code: CODE, secrets: {} });
    try {
      expect(lease.start).toBe('clone'); // not 'pool': the pooled VM was dead, a fresh clone served
      const out = await lease.session.invoke({ callId: 'retry-1', event: event('hello'), timeoutMs: 20_000 });
      expect(out).toMatchObject({ ok: true, value: { got: 'hello', pid: 1 } });
    } finally {
      await lease.release(true);
    }
    expect(childQemuPids()).not.toContain(pooled[0]);
  });

  it('a function that fails to load is its own error, not retried', async () => {
    const r = mgr.reserve({ ...fn, name: 'broken' });
    const err = await r!.acquire({ ...fn, name: 'broken' }, { code: 'throw new Error("boom at load")', secrets: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvocationError);
    expect((err as InvocationError).code).toBe('INIT_FAILED');
    expect(vmFailedToStart(err)).toBe(false);
    expect(vmFailedToStart(new InvocationError('VM_CRASHED', 'gone'))).toBe(true);
  });
});
