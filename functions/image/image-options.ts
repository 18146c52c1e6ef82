/**
 * The one translation from settings (MAYFLY_GUEST_KERNEL, MAYFLY_TINYX_CONFIG,
 * MAYFLY_IMAGE_COMPRESSION, MAYFLY_IMAGE_RUNTIMES, MAYFLY_CACHE_DIR) to the
 * image builder's options, so the worker, `npm start`, the CLI and the tests
 * build (and find in the cache) the same image.
 */
import path from 'node:path';
import { PROJECT_ROOT, type MayflyConfig } from '../../contracts/config.js';
import type { EnsureImageOptions, KernelChoice } from './build.js';

export function imageOptions(config: MayflyConfig, overrides: Partial<EnsureImageOptions> = {}): EnsureImageOptions {
  const kernel: KernelChoice = overrides.kernel ?? config.MAYFLY_GUEST_KERNEL;
  return {
    runtime: 'node',
    cacheDir: config.MAYFLY_CACHE_DIR,
    agentDir: path.join(PROJECT_ROOT, 'dist'),
    compression: config.MAYFLY_IMAGE_COMPRESSION,
    runtimes: config.MAYFLY_IMAGE_RUNTIMES,
    ...(kernel === 'tinyx' && config.MAYFLY_TINYX_CONFIG ? { tinyxConfig: { kind: 'config' as const, path: config.MAYFLY_TINYX_CONFIG } } : {}),
    ...overrides,
    kernel,
  };
}
