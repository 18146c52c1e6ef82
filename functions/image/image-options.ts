/**
 * The one translation from settings (MAYFLY_GUEST_KERNEL, MAYFLY_TINYX_CONFIG,
 * MAYFLY_IMAGE_COMPRESSION, MAYFLY_IMAGE_RUNTIMES, MAYFLY_CACHE_DIR) to the
 * image builder, so the worker, `npm start`, the CLI and the tests build (and
 * find in the cache) the same image.
 *
 * MAYFLY_GUEST_KERNEL=auto (the default) means the shipped minimized tinyx
 * kernel, compiled once per machine; when it cannot be built (no compiler, no
 * linux-source, a failed build) the image falls back to Debian's cloud kernel
 * and the progress stream says so and why. With MAYFLY_DRIVER=xen, `auto` is
 * Debian's kernel (the shipped tinyx config has no Xen guest options).
 */
import path from 'node:path';
import { PROJECT_ROOT, type MayflyConfig } from '../../contracts/config.js';
import { ensureImage, type EnsureImageOptions, type GuestImage, type ImageProgress, type KernelChoice } from './build.js';
import { tinyxConfigFor } from './kernel-build.js';

export type KernelSetting = MayflyConfig['MAYFLY_GUEST_KERNEL'];

/** Builder options for one concrete kernel (`auto` resolves to tinyx here; the fallback is ensureConfiguredImage's). */
export function imageOptions(config: MayflyConfig, overrides: Partial<EnsureImageOptions> = {}): EnsureImageOptions {
  const setting = overrides.kernel ?? config.MAYFLY_GUEST_KERNEL;
  const kernel: KernelChoice = setting === 'auto' ? 'tinyx' : setting;
  return {
    runtime: 'node',
    cacheDir: config.MAYFLY_CACHE_DIR,
    agentDir: path.join(PROJECT_ROOT, 'dist'),
    compression: config.MAYFLY_IMAGE_COMPRESSION,
    runtimes: config.MAYFLY_IMAGE_RUNTIMES,
    ...(kernel === 'tinyx' ? { tinyxConfig: tinyxConfigFor(config.MAYFLY_DRIVER, config.MAYFLY_TINYX_CONFIG) } : {}),
    ...overrides,
    kernel,
  };
}

/**
 * The image the settings ask for. With `auto`, a tinyx kernel that cannot be
 * built is not fatal: Debian's cloud kernel is used instead, and said so.
 */
export async function ensureConfiguredImage(
  config: MayflyConfig,
  overrides: Omit<Partial<EnsureImageOptions>, 'kernel'> & { kernel?: KernelChoice | 'auto' } = {},
): Promise<GuestImage> {
  let setting = overrides.kernel ?? config.MAYFLY_GUEST_KERNEL;
  const { kernel: _k, ...rest } = overrides;
  void _k;
  // The shipped tinyx config is for QEMU microvm (no Xen guest support): a Xen worker boots Debian's kernel.
  if (setting === 'auto' && config.MAYFLY_DRIVER === 'xen') setting = 'debian';
  if (setting !== 'auto') return ensureImage(imageOptions(config, { ...rest, kernel: setting }));
  try {
    return await ensureImage(imageOptions(config, { ...rest, kernel: 'tinyx' }));
  } catch (err) {
    const p: ImageProgress = {
      step: 'guest-kernel',
      detail: `the tinyx kernel could not be built (${(err as Error).message.split('\n')[0]}); falling back to Debian's cloud kernel (MAYFLY_GUEST_KERNEL=auto)`,
    };
    try {
      rest.onProgress?.(p);
    } catch {
      /* a failing printer must not fail the fallback */
    }
    return ensureImage(imageOptions(config, { ...rest, kernel: 'debian' }));
  }
}
