/** A VmHost for tests: its own run folder, config from the environment otherwise. */
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import { VmHost } from '../../worker/vm-host.js';

export async function openTestHost(): Promise<{ host: VmHost; runDir: string }> {
  const runDir = path.join(os.tmpdir(), `mft-${randomBytes(3).toString('hex')}`);
  const config = loadConfig({ ...process.env, MAYFLY_RUN_DIR: runDir });
  return { host: await VmHost.open(config), runDir };
}

export function event(body: string, extra: Partial<InvocationEvent> = {}): InvocationEvent {
  return { method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false, ...extra };
}

export function fn(code: string, name = 'test-fn') {
  return { functionName: name, code, handler: 'handler', env: {}, memoryLimitInMB: 128 };
}
