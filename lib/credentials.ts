/**
 * Operator secrets of a deployment: the admin password and the key that
 * encrypts function secrets at rest. Taken from the environment, or from a
 * file, or generated once into the data folder with mode 0600 (readable by the
 * operator only) and reused afterwards.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { MayflyConfig } from '../contracts/config.js';

export interface Resolved {
  value: string;
  /** Where it came from: 'env', or the file it was read from / generated into. */
  source: string;
  generated: boolean;
}

function fromFileOrGenerate(file: string, make: () => string): Resolved {
  if (fs.existsSync(file)) return { value: fs.readFileSync(file, 'utf8').trim(), source: file, generated: false };
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const value = make();
  try {
    fs.writeFileSync(file, value + '\n', { mode: 0o600, flag: 'wx' });
    return { value, source: file, generated: true };
  } catch {
    // another process generated it first
    return { value: fs.readFileSync(file, 'utf8').trim(), source: file, generated: false };
  }
}

export function adminPassword(config: MayflyConfig): Resolved {
  if (config.MAYFLY_ADMIN_PASSWORD) return { value: config.MAYFLY_ADMIN_PASSWORD, source: 'env', generated: false };
  const file = config.MAYFLY_ADMIN_PASSWORD_FILE ?? path.join(config.MAYFLY_DATA_DIR, 'admin-password');
  return fromFileOrGenerate(file, () => randomBytes(18).toString('base64url'));
}

/** The 32-byte key for secrets at rest. */
export function secretsKey(config: MayflyConfig): { key: Buffer; source: string; generated: boolean } {
  const r = config.MAYFLY_SECRETS_KEY
    ? { value: config.MAYFLY_SECRETS_KEY, source: 'env', generated: false }
    : fromFileOrGenerate(config.MAYFLY_SECRETS_KEY_FILE ?? path.join(config.MAYFLY_DATA_DIR, 'secrets.key'), () =>
        randomBytes(32).toString('base64'),
      );
  const key = Buffer.from(r.value, 'base64');
  if (key.length !== 32) throw new Error(`the secrets key (${r.source}) must be 32 bytes, base64-encoded`);
  return { key, source: r.source, generated: r.generated };
}
