/** A VmHost for tests: its own run folder, config from the environment otherwise. */
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import { VmHost } from '../../worker/vm-host.js';

/**
 * The guest kernels the VM-layer suite runs on: Debian's cloud kernel and the
 * shipped minimized tinyx kernel (test/helpers/global-setup.ts builds it once
 * per machine before any test file runs, and prints which kernels were used).
 */
export const TEST_KERNELS = ['debian', 'tinyx'] as const;
export type TestKernel = (typeof TEST_KERNELS)[number];

export async function openTestHost(opts: { kernel?: TestKernel } = {}): Promise<{ host: VmHost; runDir: string }> {
  const runDir = path.join(os.tmpdir(), `mft-${randomBytes(3).toString('hex')}`);
  const config = loadConfig({ ...process.env, MAYFLY_RUN_DIR: runDir, ...(opts.kernel ? { MAYFLY_GUEST_KERNEL: opts.kernel } : {}) });
  return { host: await VmHost.open(config), runDir };
}

export function event(body: string, extra: Partial<InvocationEvent> = {}): InvocationEvent {
  return { method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false, ...extra };
}

export function fn(code: string, name = 'test-fn') {
  return { functionName: name, code, handler: 'handler', env: {}, memoryLimitInMB: 128 };
}
