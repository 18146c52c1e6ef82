/**
 * Builds the guest image once before any test file runs, so parallel test
 * files find it in the cache instead of racing to build it.
 */
import path from 'node:path';
import { loadConfig, PROJECT_ROOT } from '../../contracts/config.js';
import { ensureImage } from '../../functions/image/build.js';

export default async function setup(): Promise<void> {
  const config = loadConfig();
  const t0 = performance.now();
  const image = await ensureImage({
    runtime: 'node',
    cacheDir: config.MAYFLY_CACHE_DIR,
    agentDir: path.join(PROJECT_ROOT, 'dist'),
    compression: config.MAYFLY_IMAGE_COMPRESSION,
    onProgress: (p) => {
      if (p.done === undefined) process.stderr.write(`[image] ${p.step}${p.detail ? ` ${p.detail}` : ''}\n`);
    },
  });
  process.stderr.write(
    `[image] ${image.imageId} ${image.builtNow ? 'built' : 'cached'} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
}
