/** Prints image build progress to stderr, one line per step, with bytes when known. */
import type { ImageProgress } from '../functions/image/build.js';

export function printProgress(p: ImageProgress): void {
  const amount =
    p.total !== undefined && p.done !== undefined
      ? ` ${(p.done / 1048576).toFixed(1)}/${(p.total / 1048576).toFixed(1)} MiB`
      : '';
  process.stderr.write(`mayfly image: ${p.step}${p.detail ? ` ${p.detail}` : ''}${amount}\n`);
}

export function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}
