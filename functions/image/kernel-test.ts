/**
 * The test the Tinyx elimination loop runs on each candidate kernel: build the
 * node runtime image on that kernel, boot it in a fresh QEMU microvm through the
 * same VmHost the worker uses, and run a real function invocation that touches
 * what functions commonly need (timers, crypto randomness, /tmp files, zlib,
 * a worker thread, a child process, the guest's kernel release). Any failure
 * (no boot, crash, timeout, wrong answer) fails the kernel.
 *
 * What the handler does not exercise, the elimination may remove: extend it
 * (and bump INVOCATION_TEST_ID, which keys the saved runs) when functions need more.
 */
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import type { MayflyConfig } from '../../contracts/config.js';
import { VmHost } from '../../worker/vm-host.js';
import type { BuiltKernel } from './kernel-build.js';
import type { KernelTest, KernelTestResult } from './kernel-minimize.js';
import type { Compression } from './build.js';

export const INVOCATION_TEST_ID = 'node-invocation-v2';

export const INVOCATION_TEST_HANDLER = `
import os from 'node:os';
import fs from 'node:fs';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { execFileSync } from 'node:child_process';
export async function handler(event) {
  await new Promise((r) => setTimeout(r, 5));
  fs.writeFileSync('/tmp/probe.txt', event.body);
  const back = fs.readFileSync('/tmp/probe.txt', 'utf8');
  const z = zlib.gunzipSync(zlib.gzipSync(Buffer.from(back))).toString();
  const rnd = crypto.randomBytes(16).toString('hex');
  const fromThread = await new Promise((resolve, reject) => {
    const w = new Worker('require("node:worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
    w.once('message', resolve);
    w.once('error', reject);
  });
  // child stdio pipes are AF_UNIX socketpairs in libuv
  const child = execFileSync('/bin/busybox', ['echo', 'child'], { encoding: 'utf8' }).trim();
  return { echo: z, rnd: rnd.length, thread: fromThread, child, release: os.release() };
}
`;

export interface InvocationTestOptions {
  config: MayflyConfig;
  compression?: Compression;
  /** Boot timeout for candidate kernels (a kernel that hangs fails after this). */
  bootTimeoutMs?: number;
  onProgress?: (line: string) => void;
  /** Told which accelerator the VmHost resolved. */
  onAccel?: (accel: 'kvm' | 'tcg') => void;
}

/** One boot + one invocation of INVOCATION_TEST_HANDLER on `kernel`. */
export async function runInvocationTest(kernel: BuiltKernel, opts: InvocationTestOptions): Promise<KernelTestResult> {
  const runDir = path.join(os.tmpdir(), `mfk-${randomBytes(3).toString('hex')}`);
  const config: MayflyConfig = {
    ...opts.config,
    MAYFLY_RUN_DIR: runDir,
    // Own folder: VmHost.close() removes its template folder, which by default is per process.
    MAYFLY_TEMPLATE_DIR: path.join(runDir, 'templates'),
    MAYFLY_BOOT_TIMEOUT_MS: opts.bootTimeoutMs ?? opts.config.MAYFLY_BOOT_TIMEOUT_MS,
  };
  let host: VmHost | undefined;
  try {
    host = await VmHost.open(
      config,
      (p) => {
        if (p.step === 'done' || p.step === 'write-cpio') opts.onProgress?.(`  image: ${p.step}${p.detail ? ` ${p.detail}` : ''}`);
      },
      { kernel: { tinyx: kernel }, ...(opts.compression ? { compression: opts.compression } : {}) },
    );
    opts.onAccel?.(host.driver.accel as 'kvm' | 'tcg');
    const body = `tinyx-${randomBytes(4).toString('hex')}`;
    const { outcome, timings } = await host.runOnce(
      { functionName: 'tinyx-probe', code: INVOCATION_TEST_HANDLER, handler: 'handler', env: {}, memoryLimitInMB: 128 },
      {
        callId: `probe-${randomBytes(4).toString('hex')}`,
        event: { method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false },
        timeoutMs: 30_000,
      },
    );
    if (!outcome.ok) return { ok: false, bootMs: timings.bootMs, detail: `handler failed: ${outcome.error.message}` };
    const v = outcome.value as { echo?: string; rnd?: number; thread?: number; child?: string; release?: string };
    const want = { echo: body, rnd: 32, thread: 42, child: 'child', release: kernel.release };
    for (const [k, w] of Object.entries(want)) {
      if ((v as Record<string, unknown>)[k] !== w) {
        return { ok: false, bootMs: timings.bootMs, detail: `wrong ${k}: ${JSON.stringify((v as Record<string, unknown>)[k])} (wanted ${JSON.stringify(w)})` };
      }
    }
    return { ok: true, bootMs: timings.bootMs, detail: `boot ${timings.bootMs.toFixed(0)} ms, init ${timings.initMs.toFixed(0)} ms, call ${timings.invokeMs.toFixed(0)} ms` };
  } catch (err) {
    return { ok: false, detail: (err as Error).message.replace(/\s+/g, ' ').slice(0, 400) };
  } finally {
    await host?.close().catch(() => undefined);
    await fsp.rm(runDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * The test as a KernelTest. The accelerator is resolved once (on the first
 * kernel) and reused: with MAYFLY_ACCEL=auto every new kernel would otherwise
 * pay for its own KVM probe boot.
 */
export function invocationTest(opts: InvocationTestOptions): KernelTest {
  let accel: 'kvm' | 'tcg' | undefined;
  return async (kernel) => {
    const config: MayflyConfig = accel ? { ...opts.config, MAYFLY_ACCEL: accel } : opts.config;
    const r = await runInvocationTest(kernel, { ...opts, config, onAccel: (a) => (accel ??= a) });
    return r;
  };
}
