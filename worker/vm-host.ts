/**
 * The VM side of one host: the guest image, the hypervisor driver (accelerator
 * resolved once), and how a function's VM is sized, prepared and run. Used by
 * the worker service and by `mayfly run`.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PROJECT_ROOT, type MayflyConfig } from '../contracts/config.js';
import type { InvocationEvent } from '../contracts/guest-protocol.js';
import { ensureImage, type GuestImage, type ImageProgress } from '../functions/image/build.js';
import { resolveAccel } from './driver/accel.js';
import { QemuDriver } from './driver/qemu.js';
import {
  DEFAULT_SESSION_LIMITS,
  GuestSession,
  type FunctionInit,
  type InvokeOutcome,
  type SessionLimits,
} from './guest-session.js';

const MiB = 1024 * 1024;
/** Kernel, page tables and the agent's own heap, measured with the Debian cloud kernel. */
const GUEST_BASE_OVERHEAD_MIB = 64;

/**
 * Guest RAM for a function that may use `functionMiB`: the initramfs is
 * unpacked into RAM (rootfs) and, while it unpacks, its compressed copy is in
 * RAM too, so both are added on top of the function's own memory.
 */
export function guestMemoryMiB(image: Pick<GuestImage, 'sizes'>, functionMiB: number): number {
  const imageMiB = Math.ceil((image.sizes.rootfsBytes + image.sizes.initrdBytes) / MiB);
  return functionMiB + imageMiB + GUEST_BASE_OVERHEAD_MIB;
}

export function newVmId(): string {
  return `vm${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

export interface RunOnceTimings {
  /** QEMU process start until paused with channels connected. */
  createMs: number;
  /** `cont` until the agent's `ready`. */
  bootMs: number;
  initMs: number;
  invokeMs: number;
}

export class VmHost {
  private constructor(
    readonly image: GuestImage,
    readonly driver: QemuDriver,
    readonly accelWhy: string,
    readonly limits: SessionLimits,
    private readonly runDir: string,
  ) {}

  static async open(config: MayflyConfig, onProgress?: (p: ImageProgress) => void): Promise<VmHost> {
    const image = await ensureImage({
      runtime: 'node',
      cacheDir: config.MAYFLY_CACHE_DIR,
      agentDir: path.join(PROJECT_ROOT, 'dist'),
      compression: config.MAYFLY_IMAGE_COMPRESSION,
      ...(onProgress ? { onProgress } : {}),
    });
    const limits: SessionLimits = {
      ...DEFAULT_SESSION_LIMITS,
      bootTimeoutMs: config.MAYFLY_BOOT_TIMEOUT_MS,
      maxLogBytesPerCall: config.MAYFLY_MAX_LOG_BYTES_PER_CALL,
      maxLogLinesPerCall: config.MAYFLY_MAX_LOG_LINES_PER_CALL,
    };
    const runDir = config.MAYFLY_RUN_DIR;
    const { accel, why } = await resolveAccel(config.MAYFLY_ACCEL, config.MAYFLY_CACHE_DIR, image.kernelPath, () =>
      probeKvm(image, runDir, limits),
    );
    const driver = new QemuDriver({ accel, runDir, consoleLog: config.MAYFLY_GUEST_CONSOLE_LOG });
    return new VmHost(image, driver, why, limits, runDir);
  }

  /** A VM for a function with `functionMiB` of memory, prepared (paused, nothing run yet). */
  async prepare(functionMiB: number): Promise<GuestSession> {
    const vm = await this.driver.create({
      id: newVmId(),
      kernelPath: this.image.kernelPath,
      initrdPath: this.image.initrdPath,
      memoryMiB: guestMemoryMiB(this.image, functionMiB),
    });
    return new GuestSession(this.driver, vm, this.limits);
  }

  /** Cold path: a fresh VM that runs one invocation and is destroyed, whatever happens. */
  async runOnce(
    fn: FunctionInit,
    req: { callId: string; event: InvocationEvent; timeoutMs: number },
  ): Promise<{ outcome: InvokeOutcome; timings: RunOnceTimings }> {
    const t0 = performance.now();
    const session = await this.prepare(fn.memoryLimitInMB);
    try {
      const createMs = performance.now() - t0;
      const bootMs = await session.boot();
      const t1 = performance.now();
      await session.init(fn);
      const initMs = performance.now() - t1;
      const outcome = await session.invoke(req);
      return { outcome, timings: { createMs, bootMs, initMs, invokeMs: outcome.durationMs } };
    } finally {
      await session.destroy('invocation finished');
    }
  }

  async close(): Promise<void> {
    await this.driver.close();
    await fsp.rm(this.runDir, { recursive: true, force: true });
  }
}

async function probeKvm(image: GuestImage, runDir: string, limits: SessionLimits): Promise<boolean> {
  const driver = new QemuDriver({ accel: 'kvm', runDir: path.join(runDir, 'kvm-probe') });
  try {
    const vm = await driver.create({
      id: 'kvmprobe',
      kernelPath: image.kernelPath,
      initrdPath: image.initrdPath,
      memoryMiB: guestMemoryMiB(image, 64),
    });
    await new GuestSession(driver, vm, { ...limits, bootTimeoutMs: 20_000 }).boot();
    return true;
  } catch {
    return false;
  } finally {
    await driver.close();
    await fsp.rm(path.join(runDir, 'kvm-probe'), { recursive: true, force: true });
  }
}
