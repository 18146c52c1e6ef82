/**
 * `npm run bench:density`: one VmHost filled with N paused clones of a 128 MiB
 * function (as the worker holds idle VMs: prepareClone + resumeClone + pause,
 * then, with idle reclaim, paged out to swap), for each N of BENCH_DENSITY_N
 * (default 10,200,500,800,1000), reporting at each N:
 *   - memory per paused clone: PSS of each QEMU (/proc/<pid>/smaps_rollup: pages
 *     shared with the template and the other clones count for their share),
 *     mean and p99; what each has in swap; zram's real cost per clone (its
 *     mem_used_total / N); the drop of the host's MemAvailable per VM, which
 *     counts everything (page tables, kernel stacks, zram) as a cross-check
 *   - PSS by mapping kind, from /proc/<pid>/smaps of a sample of clones
 *   - the time to start one more VM (prepareClone + resumeClone), median of
 *     BENCH_DENSITY_SAMPLES (default 15), each destroyed after, against N=10
 *   - a warm call's latency (unpause + call + pause) on a VM that is kept
 *     outside the N, against N=10; with idle reclaim, also on that VM right
 *     after it was paged out (what a call sees after the VM sat idle)
 *   - CPU the paused VMs burn while idle
 * Idle reclaim (BENCH_DENSITY_RECLAIM, default 1): each clone is paged out
 * right after it is paused, as the worker does after MAYFLY_IDLE_RECLAIM_MS.
 * It needs swap: when the host has none, the bench turns on zram
 * (scripts/zram-swap.sh, root) and off again at the end.
 * Targets (issue 19): 1,000 fit with >= 2 GiB MemAvailable left; <= 15 MiB PSS
 * per paused clone; one more VM at N=1,000 <= 1.1x N=10.
 * Filling stops early when MemAvailable falls below BENCH_DENSITY_MIN_FREE_MB
 * (default 2048). Every VM is destroyed at the end, on failure and on Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { GuestSession } from '../../worker/guest-session.js';
import { swapAvailable } from '../../worker/driver/page-out.js';
import { VmHost } from '../../worker/vm-host.js';
import { envInt, envList, managed, memAvailableMiB, nodeSpawnMs, onCleanup, progress, runBench, sleep, verdict } from './common.js';
import { grid, mean, percentile, row, table, type Row } from './stats.js';

const NS = [...new Set(envList('BENCH_DENSITY_N', [10, 200, 500, 800, 1000]))].sort((a, b) => a - b);
const SAMPLES = envInt('BENCH_DENSITY_SAMPLES', 15);
const MIN_FREE_MIB = envInt('BENCH_DENSITY_MIN_FREE_MB', 2048);
const PARALLEL = Math.max(1, envInt('BENCH_DENSITY_PARALLEL', 2));
const RECLAIM = envInt('BENCH_DENSITY_RECLAIM', 1) === 1;
/** Clones whose smaps are read for the by-mapping table at each N. */
const MAP_SAMPLE = envInt('BENCH_DENSITY_MAP_SAMPLE', 20);
const TARGET_START = 1.1;
const TARGET_PSS_MIB = 15;
const TARGET_FREE_MIB = 2048;
const CLK_TCK = 100;
const ZRAM_SCRIPT = path.resolve(import.meta.dirname, '../../../scripts/zram-swap.sh');

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

function rollup(pid: number): { pss: number; swap: number } {
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN);
    return { pss: kib('Pss') / 1024, swap: kib('Swap') / 1024 };
  } catch {
    return { pss: NaN, swap: NaN };
  }
}

/** zram0's memory in use (compressed pages and its own metadata), MiB; 0 without zram. */
function zramUsedMiB(): number {
  try {
    return Number(fs.readFileSync('/sys/block/zram0/mm_stat', 'utf8').trim().split(/\s+/)[2]) / 2 ** 20;
  } catch {
    return 0;
  }
}

const KINDS = ['TCG code buffer', 'QEMU heap', 'other anonymous', 'guest RAM (template file, CoW)', 'QEMU binary + libraries', 'other'] as const;
type Kind = (typeof KINDS)[number];

/** PSS by mapping kind of one QEMU, MiB. */
function byMapping(pid: number, ramPath: string): Record<Kind, number> {
  // By inode, not path: a jailed QEMU (worker/driver/jailer) maps its files under other paths.
  const ramInode = fs.statSync(ramPath).ino;
  const out = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  let kind: Kind = 'other';
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (m) {
      const [, perms, inode, name] = m;
      kind =
        name === '' && perms === 'rwxp'
          ? 'TCG code buffer'
          : name === '[heap]'
            ? 'QEMU heap'
            : name === '' || name === '[stack]'
              ? 'other anonymous'
              : Number(inode) === ramInode
                ? 'guest RAM (template file, CoW)'
                : /(^|\/)(usr|lib)\//.test(name!)
                  ? 'QEMU binary + libraries'
                  : 'other';
      continue;
    }
    const k = /^Pss:\s+(\d+) kB/.exec(line);
    if (k) out[kind] += Number(k[1]) / 1024;
  }
  return out;
}

await runBench('density', async () => {
  let swapOn = false;
  if (RECLAIM && !swapAvailable()) {
    progress('idle reclaim needs swap: turning on zram (scripts/zram-swap.sh on 40960)');
    execFileSync('bash', [ZRAM_SCRIPT, 'on', '40960'], { stdio: 'inherit' });
    swapOn = true;
  }
  onCleanup('zram swap', async () => {
    if (swapOn) execFileSync('bash', [ZRAM_SCRIPT, 'off'], { stdio: 'inherit' });
  });
  const runDir = path.join(os.tmpdir(), `mfd-${randomBytes(3).toString('hex')}`);
  const host = await managed(
    'VmHost',
    VmHost.open(loadConfig({ ...process.env, MAYFLY_RUN_DIR: runDir }), (p) => {
      if (p.done === undefined) progress(`image: ${p.step}`);
    }),
    (h) => h.close(), // destroys every VM of its driver, removes template RAM and sockets
  );
  const d = host.driver;
  if (RECLAIM && !d.reclaim) throw new Error(`driver ${d.name} cannot reclaim idle VMs' memory`);
  const freeBefore = memAvailableMiB();
  const zramBefore = zramUsedMiB();
  const tpl = await host.template(128);
  const tplMiB = (fs.statSync(tpl.ramPath).blocks * 512) / 2 ** 20;
  progress(`template ready in ${tpl.makeMs.toFixed(0)} ms (guest RAM ${tpl.memoryMiB} MiB, ${tplMiB.toFixed(0)} MiB of it on tmpfs)`);

  // The VM whose warm call is timed at each N: loaded and called once, kept outside the N.
  const warm = await host.prepareClone(128);
  await warm.resumeClone(randomBytes(64));
  await warm.init({ functionName: 'warm', code: 'export const handler = async (e) => Number(e.body) + 1;', handler: 'handler', env: {}, memoryLimitInMB: 128 });
  const warmCall = async (id: string) => {
    const r = await warm.invoke({ callId: id, event: { method: 'POST', path: '/', query: {}, headers: {}, body: '1', isBase64Encoded: false }, timeoutMs: 30_000 });
    if (!r.ok || r.value !== 2) throw new Error(`unexpected result ${JSON.stringify(r)}`);
  };
  await warmCall('w0');
  await d.pause(warm.vm);

  const sessions: GuestSession[] = [];
  const reclaimMs: number[] = [];
  const addOne = async () => {
    const s = await host.prepareClone(128);
    try {
      await s.resumeClone(randomBytes(64));
      await d.pause(s.vm);
      if (RECLAIM) {
        const t = performance.now();
        await d.reclaim!(s.vm);
        reclaimMs.push(performance.now() - t);
      }
    } catch (err) {
      await s.destroy('bench: clone failed');
      throw err;
    }
    sessions.push(s);
  };
  const pidOf = (s: GuestSession): number => (s.vm as unknown as { proc: { pid: number } }).proc.pid;

  const baseline = row('host: spawn `node -e 0`');
  const startRows: Row[] = [];
  const warmRows: Row[] = [];
  const prepareRows: Row[] = [];
  const reclaimedWarmRows: Row[] = [];
  const memRows: Array<Array<string | number>> = [];
  const mapRows: Array<Array<string | number>> = [];
  let stoppedAt: string | null = null;
  const freeAfterTemplate = memAvailableMiB();
  let lastPss: number[] = [];
  let lastFree = freeAfterTemplate;

  for (const n of NS) {
    const t0 = performance.now();
    while (sessions.length < n) {
      if (memAvailableMiB() < MIN_FREE_MIB) {
        stoppedAt = `stopped filling at ${sessions.length} VMs: MemAvailable below ${MIN_FREE_MIB} MiB`;
        break;
      }
      const k = Math.min(PARALLEL, n - sessions.length);
      await Promise.all(Array.from({ length: k }, addOne));
      if (sessions.length % 50 === 0) progress(`${sessions.length} paused clones, MemAvailable ${memAvailableMiB().toFixed(0)} MiB`);
    }
    const fillS = (performance.now() - t0) / 1000;
    const at = sessions.length;
    await sleep(1000);

    const mem = sessions.map((s) => rollup(pidOf(s))).filter((x) => Number.isFinite(x.pss));
    const pss = mem.map((x) => x.pss);
    const ticks0 = cpuTicks(d.pids());
    const c0 = performance.now();
    await sleep(3000);
    const idleCpu = (cpuTicks(d.pids()) - ticks0) / CLK_TCK / ((performance.now() - c0) / 1000);
    lastFree = memAvailableMiB();
    const dropPerVm = (freeAfterTemplate - lastFree) / at;
    const zramPerVm = (zramUsedMiB() - zramBefore) / at;
    lastPss = pss;

    const step = Math.max(1, Math.floor(sessions.length / MAP_SAMPLE));
    const maps = sessions.filter((_, i) => i % step === 0).slice(0, MAP_SAMPLE).map((s) => byMapping(pidOf(s), tpl.ramPath));
    mapRows.push([`N=${at}`, ...KINDS.map((k) => mean(maps.map((m) => m[k])))]);

    const r = row(`start one more VM at N=${at}`);
    const rp = row(`  of which prepareClone at N=${at}`);
    const w = row(`warm call (unpause + call + pause) at N=${at}`);
    const wr = row(`warm call on a paged-out VM at N=${at}`);
    for (let i = 0; i < SAMPLES; i++) {
      baseline.samples.push(nodeSpawnMs());
      const t = performance.now();
      const s = await host.prepareClone(128);
      rp.samples.push(performance.now() - t);
      try {
        await s.resumeClone(randomBytes(64));
        r.samples.push(performance.now() - t);
      } finally {
        await s.destroy('bench sample');
      }
      const tw = performance.now();
      await d.start(warm.vm);
      await warmCall(`w${at}-${i}`);
      await d.pause(warm.vm);
      w.samples.push(performance.now() - tw);
      if (RECLAIM) {
        // What a call sees after its VM sat idle past MAYFLY_IDLE_RECLAIM_MS.
        await d.reclaim!(warm.vm);
        const tr = performance.now();
        await d.start(warm.vm);
        await warmCall(`r${at}-${i}`);
        await d.pause(warm.vm);
        wr.samples.push(performance.now() - tr);
      }
    }
    startRows.push(r);
    prepareRows.push(rp);
    warmRows.push(w);
    if (RECLAIM) reclaimedWarmRows.push(wr);
    memRows.push([
      `N=${at}`,
      mean(pss),
      percentile(pss, 99),
      mean(mem.map((x) => x.swap)),
      zramPerVm,
      pss.reduce((a, b) => a + b, 0) / 1024,
      dropPerVm,
      lastFree,
      idleCpu * 100,
      fillS,
    ]);
    progress(`N=${at}: PSS mean ${mean(pss).toFixed(1)} MiB, MemAvailable ${lastFree.toFixed(0)} MiB, one more VM ${percentile(r.samples, 50).toFixed(0)} ms`);
    if (stoppedAt) break;
  }

  process.stdout.write(
    `\nidle reclaim: ${RECLAIM ? `on (each clone paged out after its pause: median ${percentile(reclaimMs, 50).toFixed(1)} ms, p99 ${percentile(reclaimMs, 99).toFixed(1)} ms)` : 'off'}\n`,
  );
  process.stdout.write(
    `${grid(
      ['paused clones', 'PSS mean MiB', 'PSS p99 MiB', 'in swap MiB', 'zram used/VM MiB', 'PSS total GiB', 'MemAvail drop/VM MiB', 'MemAvail MiB', 'idle CPU % of a core', 'fill s'],
      memRows,
    )}\n`,
  );
  process.stdout.write(`\nPSS by mapping, MiB (mean of ${MAP_SAMPLE} clones spread over the N):\n${grid(['paused clones', ...KINDS], mapRows)}\n`);
  process.stdout.write(
    `template: guest RAM ${tpl.memoryMiB} MiB, ${tplMiB.toFixed(0)} MiB resident on tmpfs (shared by all clones); MemAvailable at start ${freeBefore.toFixed(0)} MiB\n`,
  );
  if (stoppedAt) process.stdout.write(`${stoppedAt}\n`);
  const first = startRows[0]!;
  process.stdout.write(`\n${table(startRows.slice(1).concat([baseline]), first)}\n`);
  process.stdout.write(`\n${table(prepareRows.slice(1), prepareRows[0]!)}\n`);
  process.stdout.write(`\n${table([...warmRows.slice(1), ...reclaimedWarmRows], warmRows[0]!)}\n`);

  const last = startRows.at(-1)!;
  const lastN = Number(last.name.split('=')[1]);
  const ratio = percentile(last.samples, 50) / percentile(first.samples, 50);
  const warmRatio = percentile(warmRows.at(-1)!.samples, 50) / percentile(warmRows[0]!.samples, 50);
  const pssMean = mean(lastPss);
  const perVm = pssMean + (RECLAIM ? (zramUsedMiB() - zramBefore) / sessions.length : 0);
  verdict(
    'density',
    `${lastN} paused clones (target 1000 with >= ${TARGET_FREE_MIB} MiB MemAvailable left: ${lastN >= 1000 && lastFree >= TARGET_FREE_MIB ? 'MET' : 'NOT MET'}, ` +
      `${lastFree.toFixed(0)} MiB left); PSS ${pssMean.toFixed(1)} MiB per paused clone (target <= ${TARGET_PSS_MIB}: ${pssMean <= TARGET_PSS_MIB ? 'MET' : 'NOT MET'}` +
      `${RECLAIM ? `; with its share of zram ${perVm.toFixed(1)} MiB` : ''}); one more VM at ${lastN}: ${percentile(last.samples, 50).toFixed(0)} ms = ${ratio.toFixed(2)}x ` +
      `N=${first.name.split('=')[1]} (${percentile(first.samples, 50).toFixed(0)} ms), target <= ${TARGET_START}x: ${ratio <= TARGET_START ? 'MET' : 'NOT MET'}; ` +
      `warm call ${warmRatio.toFixed(2)}x N=${first.name.split('=')[1]}`,
  );
});
