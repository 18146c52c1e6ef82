/**
 * Builds the guest images once before any test file runs, so parallel test
 * files find them in the cache instead of racing to build them: the image on
 * the shipped minimized tinyx kernel (the default, MAYFLY_GUEST_KERNEL=auto),
 * compiled at most once per machine (2-10 min the first time, then a cache hit
 * in MAYFLY_CACHE_DIR), and the image on Debian's cloud kernel. It prints
 * which kernels the run uses.
 */
import { loadConfig } from '../../contracts/config.js';
import type { ImageProgress } from '../../functions/image/build.js';
import { ensureConfiguredImage } from '../../functions/image/image-options.js';
import { TEST_KERNELS } from './vm-host.js';

function printer(tag: string): (p: ImageProgress) => void {
  let lastKernelLine = 0;
  return (p) => {
    if (p.done !== undefined) return;
    // The kernel build reports often; one line every 15 s is enough in a CI log.
    if (p.step === 'tinyx-kernel' && /objects compiled in .*\(last:/.test(p.detail ?? '') && Date.now() - lastKernelLine < 15_000) return;
    if (p.step === 'tinyx-kernel') lastKernelLine = Date.now();
    process.stderr.write(`[${tag}] ${p.step}${p.detail ? ` ${p.detail}` : ''}\n`);
  };
}

export default async function setup(): Promise<void> {
  const config = loadConfig();
  const used: string[] = [];
  for (const kernel of new Set([config.MAYFLY_GUEST_KERNEL, ...TEST_KERNELS])) {
    const t0 = performance.now();
    const image = await ensureConfiguredImage(config, { kernel, onProgress: printer(`image ${kernel}`) });
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    process.stderr.write(`[image ${kernel}] ${image.imageId} ${image.builtNow ? 'built' : 'cached'} in ${secs} s: kernel ${image.kernelRelease}\n`);
    used.push(`${kernel}${kernel === 'auto' ? ` -> ${image.kernelKind ?? 'debian'}` : ''} (${image.kernelRelease})`);
  }
  process.stderr.write(
    `[image] guest kernels under test: ${used.join(', ')}; platform tests use MAYFLY_GUEST_KERNEL=${config.MAYFLY_GUEST_KERNEL}\n`,
  );
}
