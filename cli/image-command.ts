/** `mayfly image build`: build or find the guest image and report its sizes. */
import path from 'node:path';
import { loadConfig, PROJECT_ROOT } from '../contracts/config.js';
import { ensureImage, formatImageReport } from '../functions/image/build.js';
import { printProgress } from './progress.js';

export async function imageCommand(args: string[]): Promise<number> {
  if (args[0] !== 'build') {
    process.stderr.write('usage: mayfly image build\n');
    return 2;
  }
  const config = loadConfig();
  const t0 = performance.now();
  const image = await ensureImage({
    runtime: 'node',
    cacheDir: config.MAYFLY_CACHE_DIR,
    agentDir: path.join(PROJECT_ROOT, 'dist'),
    compression: config.MAYFLY_IMAGE_COMPRESSION,
    onProgress: printProgress,
  });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  process.stdout.write(`${formatImageReport(image)}\n${image.builtNow ? `built in ${secs} s` : 'from the cache'}\n`);
  return 0;
}
