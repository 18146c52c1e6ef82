/**
 * The Tinyx elimination loop for real, CI-sized: three candidates, one of which
 * the guest cannot do without (VIRTIO_CONSOLE: the agent's channel is
 * /dev/hvc0) and two it does not use (RD_GZIP, RD_ZSTD: the test image's
 * initramfs is lz4). Every step is a real kernel build and a real boot of the
 * node image running a function. The loop must end with exactly the two removed.
 *
 * The start is the shipped minimized config, which the global setup has just
 * built in the same build tree, and the candidates are leaf options, so every
 * build is incremental (Kbuild rebuilds only what depends on the changed
 * option: seconds, not the minutes of a full build). The shipped config keeps
 * RD_GZIP and RD_ZSTD because MAYFLY_IMAGE_COMPRESSION may ask for them.
 * Kernels are cached by config hash (MAYFLY_CACHE_DIR), so a second run on the
 * same machine only boots (the state file is per run here, so the loop itself
 * always runs).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/config.js';
import { optionValue, SHIPPED_CONFIG } from '../../functions/image/kernel-build.js';
import { minimizeKernel, reportMarkdown } from '../../functions/image/kernel-minimize.js';
import { INVOCATION_TEST_ID, invocationTest } from '../../functions/image/kernel-test.js';
import { childQemuPids } from '../helpers/processes.js';

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mftxmin-'));

afterAll(() => {
  fs.rmSync(stateDir, { recursive: true, force: true });
  expect(childQemuPids()).toEqual([]);
});

describe('tinyx option elimination (real builds and boots)', () => {
  it(
    'removes the two options the function does not need and keeps VIRTIO_CONSOLE',
    async () => {
      const config = loadConfig();
      const lines: string[] = [];
      const t0 = performance.now();
      const r = await minimizeKernel({
        cacheDir: config.MAYFLY_CACHE_DIR,
        start: { kind: 'config', path: SHIPPED_CONFIG },
        candidates: ['RD_GZIP', 'VIRTIO_CONSOLE', 'RD_ZSTD'],
        testId: INVOCATION_TEST_ID,
        test: invocationTest({ config, bootTimeoutMs: 60_000, compression: 'lz4' }),
        statePath: path.join(stateDir, 'state.json'),
        onProgress: (l) => {
          lines.push(l);
          process.stderr.write(`[minimize] ${l}\n`);
        },
      });
      const secs = (performance.now() - t0) / 1000;
      const by = Object.fromEntries(r.state.steps.map((s) => [s.option, s.status]));
      expect(by).toEqual({ CONFIG_RD_GZIP: 'removed', CONFIG_VIRTIO_CONSOLE: 'kept', CONFIG_RD_ZSTD: 'removed' });
      expect(r.removed).toEqual(['CONFIG_RD_GZIP', 'CONFIG_RD_ZSTD']);
      expect(optionValue(r.finalConfig, 'VIRTIO_CONSOLE')).toBe('y');
      expect(optionValue(r.finalConfig, 'RD_GZIP')).toBe('n');
      expect(optionValue(r.finalConfig, 'RD_ZSTD')).toBe('n');
      expect(optionValue(r.finalConfig, 'RD_LZ4')).toBe('y');
      // The failing kernel really was built and booted, and failed at boot (no channel), not at build.
      const vc = r.state.steps.find((s) => s.option === 'CONFIG_VIRTIO_CONSOLE')!;
      expect(vc.vmlinuxBytes).toBeGreaterThan(0);
      expect(vc.detail).toMatch(/VM|boot|ready|crash|stopped/i);
      expect(lines.some((l) => /ETA ~/.test(l))).toBe(true);
      const built = r.state.steps.filter((s) => s.buildCached === false).length;
      process.stderr.write(
        `[minimize] done in ${secs.toFixed(0)} s (${built} kernels compiled, ${r.state.steps.length - built} from the cache)\n${reportMarkdown(r.state, 'CI elimination run')}\n`,
      );
    },
    120 * 60_000,
  );
});
