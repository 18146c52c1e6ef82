/**
 * The gateway's side of image deploys: pull (pull.ts) and turn the result into
 * what a deploy stores: the watchdog spec as the function's code, and the root
 * filesystem. At most `concurrency` pulls run at once per gateway; more wait.
 */
import type { MayflyConfig } from '../../contracts/config.js';
import type { ImageRootfs } from '../../contracts/functions.js';
import { WATCHDOG_SPEC_VERSION, type WatchdogSpec } from '../../contracts/watchdog.js';
import { parseRegistryAuth, pullImage, type PullOptions } from './pull.js';

export interface PulledFunction {
  /** The watchdog spec (JSON): stored as the function's code. */
  code: string;
  /** The process that will run, as OpenFaaS's envProcess shows it. */
  envProcess: string;
  rootfs: ImageRootfs & { data: Uint8Array };
  report: Record<string, unknown>;
}

export function pullOptions(config: MayflyConfig): PullOptions {
  return {
    registryPrefix: config.MAYFLY_REGISTRY_PREFIX,
    insecureRegistries: config.MAYFLY_INSECURE_REGISTRIES.split(',').map((s) => s.trim()).filter(Boolean),
    credentials: parseRegistryAuth(config.MAYFLY_REGISTRY_AUTH),
    maxBytes: config.MAYFLY_IMAGE_MAX_BYTES,
    maxUnpackedBytes: config.MAYFLY_IMAGE_MAX_UNPACKED_BYTES,
    maxFiles: config.MAYFLY_IMAGE_MAX_FILES,
    timeoutMs: config.MAYFLY_REGISTRY_TIMEOUT_MS,
  };
}

export class ImagePuller {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(
    private readonly opts: PullOptions,
    private readonly concurrency = 2,
  ) {}

  async pull(image: string, envProcess?: string): Promise<PulledFunction> {
    if (this.running >= this.concurrency) await new Promise<void>((r) => this.queue.push(r));
    this.running++;
    try {
      const p = await pullImage(image, this.opts, envProcess);
      const spec: WatchdogSpec = { v: WATCHDOG_SPEC_VERSION, ...p.watchdog };
      return {
        code: JSON.stringify(spec),
        envProcess: p.watchdog.process.join(' '),
        rootfs: {
          reference: p.reference,
          digest: p.digest,
          object: `rootfs-${p.rootfs.sha256}`,
          sha256: p.rootfs.sha256,
          bytes: p.rootfs.cpioGz.length,
          unpackedBytes: p.rootfs.unpackedBytes,
          data: p.rootfs.cpioGz,
        },
        report: {
          reference: p.reference,
          layerBytes: p.layerBytes,
          files: p.rootfs.files,
          unpackedBytes: p.rootfs.unpackedBytes,
          rootfsBytes: p.rootfs.cpioGz.length,
          pullMs: Math.round(p.pullMs),
          mode: p.watchdog.mode,
        },
      };
    } finally {
      this.running--;
      this.queue.shift()?.();
    }
  }
}
