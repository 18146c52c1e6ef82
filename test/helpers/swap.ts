/**
 * Swap for tests of idle reclaim: the host's own when it has some, else a zram
 * device this test turns on (scripts/zram-swap.sh, root) and off again.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const SCRIPT = path.resolve(import.meta.dirname, '../../scripts/zram-swap.sh');
const SCRIPT_FROM_DIST = path.resolve(import.meta.dirname, '../../../scripts/zram-swap.sh');

function swapTotalKiB(): number {
  return Number(/^SwapTotal:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
}

/** Ensures swap; resolves to the function that undoes what it did (nothing if the host had swap). */
export function ensureSwap(): () => void {
  if (swapTotalKiB() > 0) return () => {};
  const script = fs.existsSync(SCRIPT) ? SCRIPT : SCRIPT_FROM_DIST;
  try {
    execFileSync('bash', [script, 'on', '2048'], { stdio: 'pipe' });
  } catch (err) {
    const e = err as { stderr?: Buffer };
    throw new Error(`idle reclaim needs swap and none could be made (run scripts/zram-swap.sh on as root): ${e.stderr?.toString().trim() ?? String(err)}`);
  }
  return () => execFileSync('bash', [script, 'off'], { stdio: 'pipe' });
}
