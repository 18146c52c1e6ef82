/**
 * The Tinyx elimination loop for real, CI-sized: three candidates, one of which
 * the guest cannot do without (VIRTIO_CONSOLE: the agent's channel is
 * /dev/hvc0) and two it does not use (AIO, FHANDLE). Every step is a real
 * kernel build and a real boot of the node image running a function. The loop
 * must end with exactly the two removed.
 *
 * The start is the shipped minimized config with AIO and FHANDLE switched back
 * on: the global setup has just built the shipped kernel in the same build
 * tree, so every build here is incremental (Kbuild rebuilds only what depends
 * on the changed options: seconds, not the minutes of a full build).
 * Kernels are cached by config hash (MAYFLY_CACHE_DIR), so a second run on the
 * same machine only boots (the state file is per run here, so the loop itself
 * always runs).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/config.js';
import { optionValue, setOptions, SHIPPED_CONFIG } from '../../functions/image/kernel-build.js';
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
        start: { kind: 'config', text: setOptions(fs.readFileSync(SHIPPED_CONFIG, 'utf8'), { AIO: 'y', FHANDLE: 'y' }) },
        candidates: ['AIO', 'VIRTIO_CONSOLE', 'FHANDLE'],
        testId: INVOCATION_TEST_ID,
        test: invocationTest({ config, bootTimeoutMs: 60_000 }),
        statePath: path.join(stateDir, 'state.json'),
        onProgress: (l) => {
          lines.push(l);
          process.stderr.write(`[minimize] ${l}\n`);
        },
      });
      const secs = (performance.now() - t0) / 1000;
      const by = Object.fromEntries(r.state.steps.map((s) => [s.option, s.status]));
      expect(by).toEqual({ CONFIG_AIO: 'removed', CONFIG_VIRTIO_CONSOLE: 'kept', CONFIG_FHANDLE: 'removed' });
      expect(r.removed).toEqual(['CONFIG_AIO', 'CONFIG_FHANDLE']);
      expect(optionValue(r.finalConfig, 'VIRTIO_CONSOLE')).toBe('y');
      expect(optionValue(r.finalConfig, 'AIO')).toBe('n');
      expect(optionValue(r.finalConfig, 'FHANDLE')).toBe('n');
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
