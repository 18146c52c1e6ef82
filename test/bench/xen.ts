/**
 * `npm run bench:xen`: median time of each `xl` operation on the nested Xen
 * host (Xen 4.17 in QEMU/TCG on this machine): create, create -p (+ the first
 * unpause until the agent's ready), pause, unpause, save, restore, destroy.
 * These are timings under emulation TWICE over (TCG emulating the machine that
 * Xen virtualises again): orders of magnitude above hardware; compare them with
 * each other, never with QEMU/KVM numbers.
 * MAYFLY_XEN_BENCH_RUNS (default 3), MAYFLY_XEN_BENCH_TYPES (default pvh; e.g. pvh,pv).
 */
import path from 'node:path';
import { freePort } from '../../infra/nats/nats-server.js';
import { loadConfig, PROJECT_ROOT } from '../../contracts/config.js';
import { ensureImage } from '../../functions/image/build.js';
import { NestedXenHost } from '../xen/nested-host.js';

async function main(): Promise<void> {
  const config = loadConfig();
  const image = await ensureImage({ cacheDir: config.MAYFLY_CACHE_DIR, agentDir: path.join(PROJECT_ROOT, 'dist'), kernel: 'debian' });
  const t0 = Date.now();
  // No nats-server: the results come back on the dom0 console.
  const host = await NestedXenHost.start({
    natsPort: await freePort(),
    imageDir: path.dirname(image.kernelPath),
    env: {
      MAYFLY_XEN_MODE: 'bench',
      MAYFLY_XEN_BENCH_RUNS: process.env.MAYFLY_XEN_BENCH_RUNS ?? '3',
      MAYFLY_XEN_BENCH_TYPES: process.env.MAYFLY_XEN_BENCH_TYPES ?? 'pvh',
    },
  });
  const stopOnSignal = () => void host.stop().then(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    await host.waitFor('dom0', 300_000);
    console.log(`nested host up: dom0 controller after ${Math.round((Date.now() - t0) / 1000)} s (console ${host.consoleLog})`);
    await host.exited;
    const results = host.reports.filter((r) => r.check === 'bench' || r.check === 'bench-error');
    if (!results.some((r) => r.check === 'bench')) throw new Error(`no bench results (console: ${host.consoleLog})`);
    console.log('\nXen 4.17 nested in QEMU/TCG — under emulation twice over; median ms');
    for (const r of results) {
      if (r.check === 'bench-error') {
        console.log(`  error (${String(r.type)} run ${String(r.run)}): ${String(r.message)}`);
        continue;
      }
      console.log(`\n${String(r.type).toUpperCase()} (${String(r.runs)} runs, guest ${String(r.memoryMiB)} MiB + driver overhead)`);
      for (const [op, ms] of Object.entries(r.median as Record<string, number>)) console.log(`  ${op.padEnd(16)} ${String(ms).padStart(7)}`);
    }
    console.log(`\ntotal ${Math.round((Date.now() - t0) / 1000)} s`);
  } finally {
    await host.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
