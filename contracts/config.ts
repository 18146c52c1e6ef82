/**
 * Every setting of every Mayfly process, parsed once with zod from environment
 * variables (`MAYFLY_*`). Defaults work on a laptop. The README's configuration
 * table lists the same names; keep them in step.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** The project's root folder (this file is contracts/config.ts, or dist/contracts/config.js). */
export const PROJECT_ROOT = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = path.resolve(here, '..');
  return path.basename(up) === 'dist' ? path.resolve(up, '..') : up;
})();

const bool = z
  .enum(['0', '1', 'true', 'false', 'yes', 'no', 'on', 'off', ''])
  .transform((v) => ['1', 'true', 'yes', 'on'].includes(v));

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z.object({
  /** Downloaded kernels and built images. */
  MAYFLY_CACHE_DIR: z.string().default(path.join(PROJECT_ROOT, '.cache')),
  /** Per-VM sockets of this process (short: unix socket paths are limited to 108 bytes). */
  MAYFLY_RUN_DIR: z.string().default(path.join(os.tmpdir(), `mayfly-${process.pid}`)),
  /** QEMU accelerator: `auto` uses KVM when /dev/kvm exists and a probe boot under it succeeds. */
  MAYFLY_ACCEL: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  /** Write each guest kernel's console to <run dir>/<vm>/console.log (debugging). */
  MAYFLY_GUEST_CONSOLE_LOG: bool.default(false),
  MAYFLY_IMAGE_COMPRESSION: z.enum(['lz4', 'gzip', 'none']).default('lz4'),
  /** Memory a function gets when its spec names none, and the most it may ask for (MiB). */
  MAYFLY_DEFAULT_MEMORY_MB: int(64, 65536).default(128),
  MAYFLY_MAX_MEMORY_MB: int(64, 65536).default(2048),
  /** Invocation timeout when the spec names none, and the most it may ask for (ms). */
  MAYFLY_DEFAULT_TIMEOUT_MS: int(100, 3_600_000).default(30_000),
  MAYFLY_MAX_TIMEOUT_MS: int(100, 3_600_000).default(300_000),
  /** Time a VM may take from start to the agent's `ready`. Generous: TCG boots take seconds. */
  MAYFLY_BOOT_TIMEOUT_MS: int(1000, 600_000).default(60_000),
  /** Log volume one invocation may write; beyond it the VM is destroyed. */
  MAYFLY_MAX_LOG_BYTES_PER_CALL: int(1024, 1 << 30).default(1024 * 1024),
  MAYFLY_MAX_LOG_LINES_PER_CALL: int(10, 10_000_000).default(10_000),
});

export type MayflyConfig = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Parses the environment; a bad value is an error naming the variable. Unset and empty mean default. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): MayflyConfig {
  const picked: Record<string, string> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== '') picked[key] = v;
  }
  const parsed = configSchema.safeParse(picked);
  if (!parsed.success) {
    const msgs = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${msgs.join('; ')}`);
  }
  return parsed.data;
}
