/** Prints image build progress to stderr, one line per step. */
import { formatProgress, type ImageProgress } from '../functions/image/build.js';

export function printProgress(p: ImageProgress): void {
  process.stderr.write(`mayfly ${formatProgress(p)}\n`);
}
