/**
 * Small helpers the image and kernel caches share: content hashes, unique
 * temp-name suffixes, and whether the process holding a lock is alive.
 */
import { createHash, randomBytes } from 'node:crypto';

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException)?.code ?? '');
}

/** A suffix for a temp file or folder no other builder (process or call) uses. */
export const tmpSuffix = (): string => `${process.pid}-${randomBytes(4).toString('hex')}`;

/** True when `pid` exists (EPERM: it exists but belongs to another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}
