/**
 * What an image function's VM boots from: the image's root filesystem (a
 * gzip'd cpio under rootfs/, made by functions/oci/ at deploy) followed by the
 * host's guest initramfs (kernel modules, node, the agent as init). The kernel
 * unpacks concatenated archives in order, so the image lands at /rootfs.
 *
 * Content-addressed and cached on disk per (guest image, rootfs sha256):
 * <cacheDir>/oci-boot/<imageId>-<sha256>.img, written to a temp name and
 * renamed, after the fetched bytes matched their sha256: nothing half-built or
 * altered is ever booted.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { ImageRootfs } from '../contracts/functions.js';

const MiB = 1024 * 1024;

export interface BootImage {
  initrdPath: string;
  /** Guest RAM the appended rootfs needs on top of the runtime image (compressed copy + unpacked files). */
  extraMiB: number;
}

export function rootfsExtraMiB(r: Pick<ImageRootfs, 'bytes' | 'unpackedBytes'>): number {
  return Math.ceil((r.bytes + r.unpackedBytes) / MiB) + 8;
}

export class BootImages {
  private readonly making = new Map<string, Promise<BootImage>>();

  constructor(
    private readonly cacheDir: string,
    private readonly base: { imageId: string; initrdPath: string },
    private readonly fetchRootfs: (object: string) => Promise<Uint8Array | null>,
  ) {}

  ensure(rootfs: ImageRootfs): Promise<BootImage> {
    const key = `${this.base.imageId}-${rootfs.sha256}`;
    let p = this.making.get(key);
    if (!p) {
      p = this.make(key, rootfs);
      this.making.set(key, p);
      p.catch(() => this.making.delete(key));
    }
    return p;
  }

  private async make(key: string, rootfs: ImageRootfs): Promise<BootImage> {
    const dir = path.join(this.cacheDir, 'oci-boot');
    const file = path.join(dir, `${key}.img`);
    const baseBytes = (await fsp.stat(this.base.initrdPath)).size;
    const done: BootImage = { initrdPath: file, extraMiB: rootfsExtraMiB(rootfs) };
    // The image's archive goes first: gzip tells the kernel where it ends, while the runtime image's
    // (lz4 legacy by default) has no end marker and would swallow an archive after it. NUL bytes
    // between archives are skipped: pad to 4.
    const pad = (4 - (rootfs.bytes % 4)) % 4;
    if ((await fsp.stat(file).catch(() => null))?.size === baseBytes + pad + rootfs.bytes) return done;
    const data = await this.fetchRootfs(rootfs.object);
    if (!data) throw new Error(`the root filesystem ${rootfs.object} of image ${rootfs.reference} is not in the object store`);
    const sha = createHash('sha256').update(data).digest('hex');
    if (sha !== rootfs.sha256 || data.length !== rootfs.bytes) {
      throw new Error(`the root filesystem of image ${rootfs.reference} does not match its sha256 (${sha}, ${data.length} bytes); not booted`);
    }
    await fsp.mkdir(dir, { recursive: true });
    const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
    try {
      await fsp.writeFile(tmp, Buffer.concat([data, Buffer.alloc(pad)]));
      await fsp.appendFile(tmp, await fsp.readFile(this.base.initrdPath));
      await fsp.rename(tmp, file);
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    return done;
  }
}
