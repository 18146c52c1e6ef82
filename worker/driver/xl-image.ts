/**
 * A prebuilt guest image for hosts that cannot build one (a Xen dom0 without
 * apt access): a folder with the image builder's output (vmlinux, initrd.img,
 * manifest.json), e.g. copied from ~/.cache/mayfly/images/<id>/ of a build host.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { GuestImage } from '../../functions/image/build.js';

interface ManifestSubset {
  imageId: string;
  runtime: 'node';
  compression: GuestImage['compression'];
  kernel: { release: string; kind?: 'debian' | 'tinyx'; bootArgs?: string[] };
  sizes: GuestImage['sizes'];
  files: string[];
}

export async function loadPrebuiltImage(dir: string): Promise<GuestImage> {
  const abs = path.resolve(dir);
  let m: ManifestSubset;
  try {
    m = JSON.parse(await readFile(path.join(abs, 'manifest.json'), 'utf8')) as ManifestSubset;
  } catch (err) {
    throw new Error(`MAYFLY_IMAGE_DIR ${abs}: no readable manifest.json (${(err as Error).message})`);
  }
  const kernelPath = path.join(abs, 'vmlinux');
  const initrdPath = path.join(abs, 'initrd.img');
  for (const [p, want] of [
    [kernelPath, m.sizes.kernelBytes],
    [initrdPath, m.sizes.initrdBytes],
  ] as const) {
    const got = (await stat(p).catch(() => null))?.size;
    if (got !== want) throw new Error(`MAYFLY_IMAGE_DIR ${abs}: ${path.basename(p)} is ${got ?? 'missing'}, the manifest says ${want} bytes`);
  }
  return {
    imageId: m.imageId,
    runtime: m.runtime,
    kernelPath,
    initrdPath,
    kernelRelease: m.kernel.release,
    compression: m.compression,
    sizes: { ...m.sizes },
    files: [...m.files],
    builtNow: false,
    kernelKind: m.kernel.kind ?? 'debian',
    kernelArgs: [...(m.kernel.bootArgs ?? [])],
  };
}
