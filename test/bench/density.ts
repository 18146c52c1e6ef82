/**
 * `npm run bench:density`: one VmHost filled with N paused clones (as the
 * worker's pool holds them: prepareClone + resumeClone + pause), for each N of
 * BENCH_DENSITY_N (default 10,50,200), reporting at each N:
 *   - memory per VM: PSS of each QEMU process (/proc/<pid>/smaps_rollup; pages
 *     shared with the template and other clones count for their share), mean
 *     and p99; and the drop of the host's MemAvailable per VM as a cross-check
 *   - the time to start one more VM (prepareClone + resumeClone), median of
 *     BENCH_DENSITY_SAMPLES (default 7) measurements, each destroyed after
 *   - CPU the paused VMs burn while idle
 * Target (issue 4): start time at the largest N <= 1.3 x at the smallest N.
 * Filling stops early when MemAvailable falls below BENCH_DENSITY_MIN_FREE_MB
 * (default 3072). Every VM is destroyed at the end, on failure and on Ctrl-C.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { GuestSession } from '../../worker/guest-session.js';
import { VmHost } from '../../worker/vm-host.js';
import { envInt, envList, managed, memAvailableMiB, nodeSpawnMs, progress, runBench, sleep, verdict } from './common.js';
import { grid, mean, percentile, row, table, type Row } from './stats.js';

const NS = [...new Set(envList('BENCH_DENSITY_N', [10, 50, 200]))].sort((a, b) => a - b);
const SAMPLES = envInt('BENCH_DENSITY_SAMPLES', 7);
const MIN_FREE_MIB = envInt('BENCH_DENSITY_MIN_FREE_MB', 3072);
const PARALLEL = Math.max(1, envInt('BENCH_DENSITY_PARALLEL', 2));
const TARGET = 1.3;
const CLK_TCK = 100;

function cpuTicks(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      sum += Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
    } catch {
      // gone
    }
  }
  return sum;
}

await runBench('density', async () => {
  const runDir = path.join(os.tmpdir(), `mfd-${randomBytes(3).toString('hex')}`);
  const host = await managed(
    'VmHost',
    VmHost.open(loadConfig({ ...process.env, MAYFLY_RUN_DIR: runDir }), (p) => {
      if (p.done === undefined) progress(`image: ${p.step}`);
    }),
    (h) => h.close(), // destroys every VM of its driver, removes template RAM and sockets
  );
  const d = host.driver;
  const freeBefore = memAvailableMiB();
  const tpl = await host.template(128);
  const tplMiB = (fs.statSync(tpl.ramPath).blocks * 512) / 2 ** 20;
  progress(`template ready in ${tpl.makeMs.toFixed(0)} ms (guest RAM ${tpl.memoryMiB} MiB, ${tplMiB.toFixed(0)} MiB of it on tmpfs)`);

  const sessions: GuestSession[] = [];
  const addOne = async () => {
    const s = await host.prepareClone(128);
    try {
      await s.resumeClone(randomBytes(64));
      await d.pause(s.vm);
    } catch (err) {
      await s.destroy('bench: clone failed');
      throw err;
    }
    sessions.push(s);
  };

  const baseline = row('host: spawn `node -e 0`');
  const startRows: Row[] = [];
  const memRows: Array<Array<string | number>> = [];
  let stoppedAt: string | null = null;
  const freeAfterTemplate = memAvailableMiB();

  for (const n of NS) {
    const t0 = performance.now();
    while (sessions.length < n) {
      if (memAvailableMiB() < MIN_FREE_MIB) {
        stoppedAt = `stopped filling at ${sessions.length} VMs: MemAvailable below ${MIN_FREE_MIB} MiB`;
        break;
      }
      const k = Math.min(PARALLEL, n - sessions.length);
      await Promise.all(Array.from({ length: k }, addOne));
      if (sessions.length % 25 === 0) progress(`${sessions.length} paused clones, MemAvailable ${memAvailableMiB().toFixed(0)} MiB`);
    }
    const fillS = (performance.now() - t0) / 1000;
    const at = sessions.length;
    await sleep(1000);

    const pss = sessions.map((s) => (d.memoryPssKiB(s.vm) ?? NaN) / 1024).filter((x) => Number.isFinite(x));
    const ticks0 = cpuTicks(d.pids());
    const c0 = performance.now();
    await sleep(3000);
    const idleCpu = (cpuTicks(d.pids()) - ticks0) / CLK_TCK / ((performance.now() - c0) / 1000);
    const dropPerVm = (freeAfterTemplate - memAvailableMiB()) / at;

    const r = row(`start one more VM at N=${at}`);
    for (let i = 0; i < SAMPLES; i++) {
      baseline.samples.push(nodeSpawnMs());
      const t = performance.now();
      const s = await host.prepareClone(128);
      try {
        await s.resumeClone(randomBytes(64));
        r.samples.push(performance.now() - t);
      } finally {
        await s.destroy('bench sample');
      }
    }
    startRows.push(r);
    memRows.push([
      `N=${at}`,
      mean(pss),
      percentile(pss, 99),
      pss.reduce((a, b) => a + b, 0) / 1024,
      dropPerVm,
      idleCpu * 100,
      fillS,
    ]);
    progress(`N=${at}: PSS mean ${mean(pss).toFixed(1)} MiB, one more VM ${percentile(r.samples, 50).toFixed(0)} ms`);
    if (stoppedAt) break;
  }

  process.stdout.write(
    `\n${grid(
      ['paused clones', 'PSS mean MiB', 'PSS p99 MiB', 'PSS total GiB', 'MemAvail drop/VM MiB', 'idle CPU % of a core', 'fill s'],
      memRows,
    )}\n`,
  );
  process.stdout.write(
    `template: guest RAM ${tpl.memoryMiB} MiB, ${tplMiB.toFixed(0)} MiB resident on tmpfs (shared by all clones); MemAvailable at start ${freeBefore.toFixed(0)} MiB\n`,
  );
  if (stoppedAt) process.stdout.write(`${stoppedAt}\n`);
  const first = startRows[0]!;
  process.stdout.write(`\n${table(startRows.slice(1).concat([baseline]), first)}\n`);

  const last = startRows.at(-1)!;
  const ratio = percentile(last.samples, 50) / percentile(first.samples, 50);
  verdict(
    'density',
    `one more VM at ${last.name.split('=')[1]} VMs: ${percentile(last.samples, 50).toFixed(0)} ms = ${ratio.toFixed(2)}x ` +
      `N=${first.name.split('=')[1]} (${percentile(first.samples, 50).toFixed(0)} ms), target <= ${TARGET}x: ${ratio <= TARGET ? 'MET' : 'NOT MET'}; ` +
      `PSS ${mean(sessions.map((s) => (d.memoryPssKiB(s.vm) ?? 0) / 1024)).toFixed(1)} MiB per paused clone`,
  );
});
