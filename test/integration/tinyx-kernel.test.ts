/**
 * The tinyx kernel (built from linux-source-6.1 with the shipped minimized
 * config, virtio console built in, no modules, no ACPI) boots the node runtime
 * image and runs real functions: a cold boot and a copy-on-write clone of a
 * template, as the worker does with MAYFLY_GUEST_KERNEL=tinyx. Also: unchanged
 * inputs are a cache hit (seconds, no make).
 *
 * A cold first run compiles the kernel (3-10 min on 2 cores, depending on load);
 * after that the kernel and the image come from MAYFLY_CACHE_DIR.
 */
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, PROJECT_ROOT } from '../../contracts/config.js';
import { ensureImage } from '../../functions/image/build.js';
import { buildKernel, defaultTinyxConfig, optionValue, SHIPPED_CONFIG } from '../../functions/image/kernel-build.js';
import { VmHost } from '../../worker/vm-host.js';
import { childQemuPids } from '../helpers/processes.js';
import { event, fn } from '../helpers/vm-host.js';
import fs from 'node:fs';

const config = loadConfig({
  ...process.env,
  MAYFLY_GUEST_KERNEL: 'tinyx',
  MAYFLY_RUN_DIR: path.join(os.tmpdir(), `mftx-${randomBytes(3).toString('hex')}`),
  MAYFLY_TEMPLATE_DIR: path.join('/dev/shm', `mftx-${randomBytes(3).toString('hex')}`),
});
let host: VmHost;
const progress: string[] = [];

beforeAll(async () => {
  const t0 = performance.now();
  host = await VmHost.open(config, (p) => {
    if (p.done === undefined) {
      progress.push(`${p.step} ${p.detail ?? ''}`);
      process.stderr.write(`[tinyx] ${p.step} ${p.detail ?? ''}\n`);
    }
  });
  process.stderr.write(`[tinyx] VmHost with the tinyx kernel ready in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}, 90 * 60_000);

afterAll(async () => {
  await host?.close();
  expect(childQemuPids()).toEqual([]);
});

describe('the shipped tinyx kernel', () => {
  it('is what MAYFLY_GUEST_KERNEL=tinyx selects, says so, and needs no modules', () => {
    expect(fs.existsSync(SHIPPED_CONFIG)).toBe(true);
    expect(host.image.kernelKind).toBe('tinyx');
    expect(host.image.kernelRelease).toMatch(/-tinyx$/);
    expect(host.image.files.filter((f) => f.startsWith('/lib/modules'))).toEqual([]);
    // No ACPI in the kernel: QEMU must run microvm with acpi=off (else ioapic2 hides the virtio IRQ).
    expect(host.image.machineOptions).toEqual(['acpi=off']);
    expect(host.image.kernelArgs).toEqual([]);
    expect(progress.some((l) => /^guest-kernel using tinyx kernel/.test(l))).toBe(true);
  });

  it('boots the node image cold and runs a function in the guest', async () => {
    const code = `
      import os from 'node:os';
      import crypto from 'node:crypto';
      export async function handler(event) {
        const n = JSON.parse(event.body);
        return { sum: n.reduce((a, b) => a + b, 0), release: os.release(), pid: process.pid, uuid: crypto.randomUUID().length };
      }`;
    const { outcome, timings } = await host.runOnce(fn(code, 'tinyx-sum'), {
      callId: 'tinyx-1',
      event: event(JSON.stringify([1, 2, 3, 4])),
      timeoutMs: 20_000,
    });
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(outcome.value).toEqual({ sum: 10, release: host.image.kernelRelease, pid: 1, uuid: 36 });
    process.stderr.write(`[tinyx] cold: create ${timings.createMs.toFixed(0)} ms, boot ${timings.bootMs.toFixed(0)} ms, init ${timings.initMs.toFixed(0)} ms, call ${timings.invokeMs.toFixed(1)} ms\n`);
  });

  it('serves from a copy-on-write clone of a template (the worker path)', async () => {
    const s = await host.prepareClone(128);
    try {
      await s.resumeClone(randomBytes(64));
      await s.init(fn(`export const handler = async (e) => ({ twice: Number(e.body) * 2, release: (await import('node:os')).release() });`, 'tinyx-clone'));
      const out = await s.invoke({ callId: 'tinyx-clone-1', event: event('21'), timeoutMs: 20_000 });
      expect(out).toMatchObject({ ok: true, value: { twice: 42, release: host.image.kernelRelease } });
    } finally {
      await s.destroy('test done');
    }
  });

  it('is a cache hit in seconds when nothing changed (kernel and image)', async () => {
    const t0 = performance.now();
    const k = await buildKernel({ cacheDir: config.MAYFLY_CACHE_DIR, config: defaultTinyxConfig() });
    const kernelMs = performance.now() - t0;
    expect(k.cached).toBe(true);
    expect(optionValue(await fs.promises.readFile(k.configPath, 'utf8'), 'VIRTIO_CONSOLE')).toBe('y');
    const t1 = performance.now();
    const img = await ensureImage({
      runtime: 'node',
      cacheDir: config.MAYFLY_CACHE_DIR,
      agentDir: path.join(PROJECT_ROOT, 'dist'),
      compression: config.MAYFLY_IMAGE_COMPRESSION,
      kernel: 'tinyx',
    });
    const imageMs = performance.now() - t1;
    expect(img.builtNow).toBe(false);
    expect(img.imageId).toBe(host.image.imageId);
    process.stderr.write(`[tinyx] cache hit: kernel ${kernelMs.toFixed(0)} ms, image ${imageMs.toFixed(0)} ms\n`);
    expect(kernelMs).toBeLessThan(5000);
    expect(imageMs).toBeLessThan(10_000);
  });
});
