/**
 * `npm run bench:image`: guest image size against boot time. The same node
 * image (same agent, same function) on
 *   (a) Debian's cloud kernel (+ the four virtio console modules in the initramfs),
 *   (b) the tinyconfig-based kernel (tinyconfig + infra/kernel/tinyx-microvm.fragment),
 *   (c) the minimized kernel (infra/kernel/tinyx-microvm.config),
 * each with the initramfs uncompressed, lz4 (legacy frame, -9) and zstd (-19).
 * For each: kernel file bytes, kernel bytes loaded into the guest (PT_LOAD: the
 * file is padded to 2 MiB segment alignment), initrd bytes, and cold boot to the agent's `ready`
 * (QEMU start paused + boot; median of BENCH_BOOTS, default 5, interleaved
 * round-robin over the variants so load drifts hit all alike), plus the first
 * invocation after boot. Ratios are against (a)+lz4, the platform's default.
 *
 * BENCH_BOOTS (5), BENCH_KERNELS (debian,tinyx-base,tinyx-min), BENCH_COMPRESSIONS (none,lz4,zstd).
 */
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import type { Compression, KernelChoice } from '../../functions/image/build.js';
import { baseTinyxConfig, buildKernel, defaultTinyxConfig, elfLoadBytes } from '../../functions/image/kernel-build.js';
import { VmHost } from '../../worker/vm-host.js';
import { envInt, managed, progress, runBench, verdict } from './common.js';
import { grid, median } from './stats.js';

const BOOTS = envInt('BENCH_BOOTS', 5);
const KERNELS = (process.env.BENCH_KERNELS ?? 'debian,tinyx-base,tinyx-min').split(',').map((s) => s.trim()).filter(Boolean);
const COMPRESSIONS = (process.env.BENCH_COMPRESSIONS ?? 'none,lz4,zstd').split(',').map((s) => s.trim()).filter(Boolean) as Compression[];

const ev = (body: string): InvocationEvent => ({ method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false });
const fn = {
  functionName: 'bench-image',
  code: 'export const handler = async (e) => Number(e.body) + 1;',
  handler: 'handler',
  env: {},
  memoryLimitInMB: 128,
};
const MiB = 1024 * 1024;

interface Variant {
  name: string;
  kernelName: string;
  compression: Compression;
  host: VmHost;
  boot: number[];
  firstCall: number[];
}

await runBench('image-size', async () => {
  const config = loadConfig();
  const kernels: Record<string, KernelChoice> = {};
  for (const k of KERNELS) {
    if (k === 'debian') kernels[k] = 'debian';
    else if (k === 'tinyx-base' || k === 'tinyx-min') {
      const t0 = performance.now();
      const built = await buildKernel({
        cacheDir: config.MAYFLY_CACHE_DIR,
        config: k === 'tinyx-base' ? baseTinyxConfig() : defaultTinyxConfig(),
        onProgress: (p) => progress(`${k}: ${p.step} ${p.detail ?? ''}`),
      });
      progress(`${k}: ${built.release} ${built.configHash.slice(0, 12)} ${built.cached ? 'cached' : 'built'} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      kernels[k] = { tinyx: built };
    } else throw new Error(`BENCH_KERNELS: unknown kernel ${k} (debian, tinyx-base, tinyx-min)`);
  }

  const variants: Variant[] = [];
  for (const [kernelName, kernel] of Object.entries(kernels)) {
    for (const compression of COMPRESSIONS) {
      const runDir = path.join(os.tmpdir(), `mfbi-${randomBytes(3).toString('hex')}`);
      const t0 = performance.now();
      const host = await managed(
        `VmHost ${kernelName}+${compression}`,
        VmHost.open(
          loadConfig({ ...process.env, MAYFLY_RUN_DIR: runDir, MAYFLY_TEMPLATE_DIR: path.join(runDir, 'tpl') }),
          (p) => {
            if (p.step === 'write-cpio' && p.done === undefined) progress(`${kernelName}+${compression}: ${p.step} ${p.detail ?? ''}`);
          },
          { kernel, compression },
        ),
        (h) => h.close(),
      );
      progress(`${kernelName}+${compression}: image ${host.image.imageId} ${host.image.builtNow ? 'built' : 'cached'} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      variants.push({ name: `${kernelName}+${compression}`, kernelName, compression, host, boot: [], firstCall: [] });
    }
  }

  for (let i = 0; i < BOOTS; i++) {
    for (const v of variants) {
      const t = performance.now();
      const s = await v.host.prepare(128);
      try {
        await s.boot();
        v.boot.push(performance.now() - t);
        const t1 = performance.now();
        await s.init(fn);
        const r = await s.invoke({ callId: `b${i}`, event: ev('41'), timeoutMs: 30_000 });
        if (!r.ok || r.value !== 42) throw new Error(`${v.name}: unexpected result ${JSON.stringify(r)}`);
        v.firstCall.push(performance.now() - t1);
      } finally {
        await s.destroy('bench');
      }
      progress(`round ${i + 1}/${BOOTS} ${v.name}: boot ${v.boot.at(-1)!.toFixed(0)} ms`);
    }
  }

  const ref = variants.find((v) => v.kernelName === 'debian' && v.compression === 'lz4') ?? variants[0]!;
  const refBytes = ref.host.image.sizes.kernelBytes + ref.host.image.sizes.initrdBytes;
  const refBoot = median(ref.boot);
  const loaded = new Map<string, number>();
  for (const v of variants) loaded.set(v.name, await elfLoadBytes(v.host.image.kernelPath));
  const rows = variants.map((v) => {
    const sz = v.host.image.sizes;
    const total = sz.kernelBytes + sz.initrdBytes;
    return [
      v.name,
      v.host.image.kernelRelease,
      (sz.kernelBytes / MiB).toFixed(1),
      (loaded.get(v.name)! / MiB).toFixed(1),
      (sz.initrdBytes / MiB).toFixed(1),
      (total / MiB).toFixed(1),
      (total / refBytes).toFixed(2),
      median(v.boot).toFixed(0),
      Math.min(...v.boot).toFixed(0),
      (median(v.boot) / refBoot).toFixed(2),
      median(v.firstCall).toFixed(0),
    ];
  });
  process.stdout.write(
    `\nguest image size vs cold boot to ready (${ref.host.driver.accel}, ${BOOTS} boots each, medians; ratios against ${ref.name}):\n` +
      grid(['variant', 'kernel', 'kernel MiB', 'loaded MiB', 'initrd MiB', 'total MiB', 'x size', 'boot ms', 'min ms', 'x boot', 'init+1st call ms'], rows) +
      '\n',
  );
  const best = [...variants].sort((a, b) => median(a.boot) - median(b.boot))[0]!;
  verdict(
    'image-size',
    `fastest boot ${best.name}: ${median(best.boot).toFixed(0)} ms = ${(median(best.boot) / refBoot).toFixed(2)}x of ${ref.name} (${refBoot.toFixed(0)} ms), ` +
      `${((best.host.image.sizes.kernelBytes + best.host.image.sizes.initrdBytes) / MiB).toFixed(1)} MiB vs ${(refBytes / MiB).toFixed(1)} MiB`,
  );
});
