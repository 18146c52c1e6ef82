/**
 * The VM side of one host: the guest image, the hypervisor driver (accelerator
 * resolved once), and how a function's VM is sized, prepared and run. Used by
 * the worker service and by `mayfly run`.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { MayflyConfig } from '../contracts/config.js';
import type { InvocationEvent } from '../contracts/guest-protocol.js';
import { ensureImage, type GuestImage, type ImageProgress, type KernelChoice } from '../functions/image/build.js';
import { ensureConfiguredImage } from '../functions/image/image-options.js';
import { resolveAccel } from './driver/accel.js';
import { QemuDriver } from './driver/qemu.js';
import { Jailer, jailerSettings } from './driver/jailer/index.js';
import type { HypervisorDriver, Vm } from './driver/types.js';
import { XenDriver } from './driver/xen.js';
import { loadPrebuiltImage } from './driver/xl-image.js';
import type { BootImage } from './oci-boot.js';
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

/** Template RAM belongs on tmpfs: shared pages in memory, no disk I/O. */
function defaultShmDir(): string {
  return fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
}

/**
 * Template RAM of Mayfly processes that died without cleaning up (a killed
 * worker) would hold tmpfs memory forever: remove the folders whose process is gone.
 */
async function sweepStaleTemplates(): Promise<void> {
  const shm = defaultShmDir();
  for (const name of await fsp.readdir(shm).catch(() => [] as string[])) {
    const m = /^mayfly-(\d+)$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') await fsp.rm(path.join(shm, name), { recursive: true, force: true });
    }
  }
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

export interface Template {
  /** The initramfs the template booted from (an image function's, worker/oci-boot.ts); absent: the host image's. */
  initrdPath?: string;
  functionMiB: number;
  memoryMiB: number;
  ramPath: string;
  statePath: string;
  makeMs: number;
}

/** What the worker needs of a driver beyond the interface (both drivers have it). */
export type HostDriver = HypervisorDriver &
  Required<Pick<HypervisorDriver, 'snapshot' | 'restore'>> & {
    readonly accel: string;
    memoryPssKiB(vm: Vm): number | null;
    liveVmIds(): string[];
    pids(): number[];
  };

export class VmHost {
  private readonly templates = new Map<number, Promise<Template>>();
  private readonly functionTemplates = new Map<string, Promise<Template>>();
  /** What the jailer does on this host (or why it is off): logged once by the worker. */
  jailWhy = 'jailer not used by this driver';

  private constructor(
    readonly image: GuestImage,
    readonly driver: HostDriver,
    readonly accelWhy: string,
    readonly limits: SessionLimits,
    private readonly runDir: string,
    private readonly templateDir: string,
  ) {}

  /**
   * @param opts.kernel overrides MAYFLY_GUEST_KERNEL (e.g. a tinyx kernel under test);
   *   opts.compression overrides MAYFLY_IMAGE_COMPRESSION.
   */
  static async open(
    config: MayflyConfig,
    onProgress?: (p: ImageProgress) => void,
    opts: { kernel?: KernelChoice; compression?: GuestImage['compression'] } = {},
  ): Promise<VmHost> {
    const kernel: KernelChoice | 'auto' = opts.kernel ?? config.MAYFLY_GUEST_KERNEL;
    onProgress?.({
      step: 'guest-kernel',
      detail:
        typeof kernel === 'object'
          ? `tinyx ${kernel.tinyx.id} (given by the caller)`
          : `${kernel} (MAYFLY_GUEST_KERNEL=${config.MAYFLY_GUEST_KERNEL})${kernel === 'tinyx' && config.MAYFLY_TINYX_CONFIG ? ` config ${config.MAYFLY_TINYX_CONFIG}` : ''}`,
    });
    const image = config.MAYFLY_IMAGE_DIR
      ? await loadPrebuiltImage(config.MAYFLY_IMAGE_DIR)
      : await ensureConfiguredImage(config, {
          kernel,
          ...(opts.compression ? { compression: opts.compression } : {}),
          ...(onProgress ? { onProgress } : {}),
        });
    onProgress?.({ step: 'guest-kernel', detail: `using ${image.kernelKind ?? 'debian'} kernel ${image.kernelRelease} (image ${image.imageId})` });
    const limits: SessionLimits = {
      ...DEFAULT_SESSION_LIMITS,
      bootTimeoutMs: config.MAYFLY_BOOT_TIMEOUT_MS,
      maxLogBytesPerCall: config.MAYFLY_MAX_LOG_BYTES_PER_CALL,
      maxLogLinesPerCall: config.MAYFLY_MAX_LOG_LINES_PER_CALL,
    };
    const runDir = config.MAYFLY_RUN_DIR;
    if (config.MAYFLY_DRIVER === 'xen') {
      const driver = await XenDriver.open({
        runDir,
        namePrefix: config.MAYFLY_XEN_NAME_PREFIX ?? `mayfly-${config.MAYFLY_HOST_ID ?? 'w'}-`,
        type: config.MAYFLY_XEN_GUEST_TYPE,
        xlTimeoutMs: config.MAYFLY_XL_TIMEOUT_MS,
        ...(config.MAYFLY_XEN_GUEST_CPUS ? { cpus: config.MAYFLY_XEN_GUEST_CPUS } : {}),
      });
      return new VmHost(image, driver, 'MAYFLY_DRIVER=xen (xl in dom0)', limits, runDir, config.MAYFLY_TEMPLATE_DIR ?? path.join(defaultShmDir(), `mayfly-${process.pid}`));
    }
    const { accel, why } = await resolveAccel(config.MAYFLY_ACCEL, config.MAYFLY_CACHE_DIR, image.kernelPath, () =>
      probeKvm(image, runDir, limits),
    );
    await fsp.mkdir(runDir, { recursive: true, mode: 0o700 });
    const jail = Jailer.open(jailerSettings(config), { runDir, kvm: accel === 'kvm' });
    const driver = new QemuDriver({ accel, runDir, consoleLog: config.MAYFLY_GUEST_CONSOLE_LOG, jailer: jail.jailer, tbSizeMiB: config.MAYFLY_QEMU_TB_SIZE_MB, cacheDir: config.MAYFLY_CACHE_DIR });
    if (!config.MAYFLY_TEMPLATE_DIR) await sweepStaleTemplates();
    const host = new VmHost(image, driver, why, limits, runDir, config.MAYFLY_TEMPLATE_DIR ?? path.join(defaultShmDir(), `mayfly-${process.pid}`));
    host.jailWhy = jail.why;
    return host;
  }

  /**
   * The template of a guest size: booted once to the agent's `ready`, its RAM
   * in a file on tmpfs and its device state saved (LightVM's checkpoint). Made
   * on first use and then shared by every clone of that size. Templates live in
   * this process's template folder, so a new image (a new worker) makes new ones.
   */
  template(functionMiB: number): Promise<Template> {
    let t = this.templates.get(functionMiB);
    if (!t) {
      t = this.makeTemplate(functionMiB);
      this.templates.set(functionMiB, t);
      t.catch(() => this.templates.delete(functionMiB));
    }
    return t;
  }

  /**
   * A function snapshot: a template whose guest has `fn` loaded (booted, init,
   * warm-up reseed, snapshot), shared by every clone of that function version.
   * `key` names the function version (made once per key until dropped).
   */
  functionTemplate(key: string, fn: FunctionInit, boot?: BootImage): Promise<Template> {
    let t = this.functionTemplates.get(key);
    if (!t) {
      t = this.makeTemplate(fn.memoryLimitInMB, { key, fn }, boot);
      this.functionTemplates.set(key, t);
      t.catch(() => this.functionTemplates.delete(key));
    }
    return t;
  }

  /** Removes a function snapshot's files (running clones keep their private copy-on-write mapping). */
  async dropFunctionTemplate(key: string): Promise<void> {
    const t = this.functionTemplates.get(key);
    this.functionTemplates.delete(key);
    const done = await t?.catch(() => null);
    if (done) await fsp.rm(path.dirname(done.ramPath), { recursive: true, force: true });
  }

  /** What every VM of this host's image starts from: a fresh id, the image's kernel, initrd and machine needs. */
  private newSpec(initrdPath?: string) {
    return {
      id: newVmId(),
      kernelPath: this.image.kernelPath,
      initrdPath: initrdPath ?? this.image.initrdPath,
      kernelArgs: this.image.kernelArgs ?? [],
      machineOptions: this.image.machineOptions ?? [],
    };
  }

  /** A clone of the size template (or of `template`, e.g. a function snapshot), restored and paused: `resumeClone` it to run. */
  async prepareClone(functionMiB: number, template?: Template): Promise<GuestSession> {
    const t = template ?? (await this.template(functionMiB));
    const vm = await this.driver.create({
      ...this.newSpec(t.initrdPath),
      memoryMiB: t.memoryMiB,
      memoryFile: { path: t.ramPath, shared: false },
      incoming: true,
    });
    try {
      await this.driver.restore(vm, t.statePath);
    } catch (err) {
      await this.driver.destroy(vm, 'restore failed');
      throw err;
    }
    return new GuestSession(this.driver, vm, this.limits);
  }

  private async makeTemplate(functionMiB: number, loaded?: { key: string; fn: FunctionInit }, boot?: BootImage): Promise<Template> {
    const name = loaded ? `fn-${createHash('sha256').update(loaded.key).digest('hex').slice(0, 16)}` : String(functionMiB);
    const dir = path.join(this.templateDir, `${this.image.imageId.slice(0, 12)}-${name}`);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const ramPath = path.join(dir, 'ram');
    const statePath = path.join(dir, 'state');
    const memoryMiB = guestMemoryMiB(this.image, functionMiB) + (boot?.extraMiB ?? 0);
    const t0 = performance.now();
    const vm = await this.driver.create({
      ...this.newSpec(boot?.initrdPath),
      memoryMiB,
      memoryFile: { path: ramPath, shared: true },
    });
    const session = new GuestSession(this.driver, vm, this.limits);
    try {
      await session.boot();
      if (loaded) await session.init({ ...loaded.fn, eager: true });
      // Warm-up: run the reseed path once so clones resume with it already translated (TCG) and
      // compiled (V8). Each clone is re-keyed with its own entropy right after restore.
      await session.reseed(randomBytes(64));
      // And the invocation path (built-in handler), so clones find it compiled.
      await session.warmup();
      await this.driver.snapshot(vm, statePath);
    } finally {
      await session.destroy('template saved');
    }
    return { ...(boot ? { initrdPath: boot.initrdPath } : {}), functionMiB, memoryMiB, ramPath, statePath, makeMs: performance.now() - t0 };
  }

  /** A VM for a function with `functionMiB` of memory, prepared (paused, nothing run yet); `boot`: an image function's initramfs. */
  async prepare(functionMiB: number, boot?: BootImage): Promise<GuestSession> {
    const vm = await this.driver.create({
      ...this.newSpec(boot?.initrdPath),
      memoryMiB: guestMemoryMiB(this.image, functionMiB) + (boot?.extraMiB ?? 0),
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
    await Promise.allSettled([...this.templates.values(), ...this.functionTemplates.values()]);
    await fsp.rm(this.runDir, { recursive: true, force: true });
    await fsp.rm(this.templateDir, { recursive: true, force: true });
  }
}

async function probeKvm(image: GuestImage, runDir: string, limits: SessionLimits): Promise<boolean> {
  const driver = new QemuDriver({ accel: 'kvm', runDir: path.join(runDir, 'kvm-probe') });
  try {
    const vm = await driver.create({
      id: 'kvmprobe',
      kernelPath: image.kernelPath,
      initrdPath: image.initrdPath,
      kernelArgs: image.kernelArgs ?? [],
      machineOptions: image.machineOptions ?? [],
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
