/**
 * `npm run bench:vm-start`: the start of one VM by kind, on one VmHost in this
 * process (no platform), against the host's own `node -e 0` spawn measured
 * interleaved in the same run:
 *
 *   cold boot        prepare (QEMU start, paused -S) + boot until the agent's `ready`
 *   clone            prepareClone (QEMU start with -incoming + restore of the template
 *                    state, copy-on-write RAM) + resumeClone (cont, reseed, `ready`)
 *   pool unpause     a clone resumed once and paused (what the worker's pool holds):
 *                    cont + init (load the function) + first call
 *   warm unpause     a paused VM that already served calls: cont + call
 * plus the controls: QMP stop+cont, and a call on a running VM.
 *
 * BENCH_BOOTS (5), BENCH_CLONES (20), BENCH_ROUNDS (50).
 *
 * BENCH_WARM_TEMPLATE=1 adds an experiment: clones of a template that ran the
 * agent's reseed path once before its snapshot (VmHost's template is saved
 * right after boot, so every clone runs that code for the first time: V8 lazy
 * compilation and TCG translation). Measurement only: such clones would share
 * the template's RNG keystream (the agent reseeds once), never serve with them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../../contracts/config.js';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import type { GuestSession } from '../../worker/guest-session.js';
import { GuestSession as Session } from '../../worker/guest-session.js';
import { VmHost } from '../../worker/vm-host.js';
import { cpuSeconds, envInt, managed, nodeSpawnMs, progress, runBench, verdict } from './common.js';
import { grid, percentile, row, table } from './stats.js';

const BOOTS = envInt('BENCH_BOOTS', 5);
const CLONES = envInt('BENCH_CLONES', 20);
const ROUNDS = envInt('BENCH_ROUNDS', 50);
const WARM_TEMPLATE = process.env.BENCH_WARM_TEMPLATE === '1';

const ev = (body: string): InvocationEvent => ({ method: 'POST', path: '/', query: {}, headers: {}, body, isBase64Encoded: false });
const fn = {
  functionName: 'bench',
  code: 'export const handler = async (e) => Number(e.body) + 1;',
  handler: 'handler',
  env: {},
  memoryLimitInMB: 128,
};

/** CPU seconds of this process's reaped children (its QEMUs once destroyed, `node -e 0`). */
const childCpu = () => cpuSeconds([process.pid]) - cpuSeconds([process.pid], false);
let spawnCpu = 0;
let spawns = 0;
function spawnBaseline(): number {
  const c = childCpu();
  const ms = nodeSpawnMs();
  spawnCpu += childCpu() - c;
  spawns++;
  return ms;
}

async function callOnce(s: GuestSession, id: string): Promise<void> {
  const r = await s.invoke({ callId: id, event: ev('1'), timeoutMs: 30_000 });
  if (!r.ok || r.value !== 2) throw new Error(`unexpected result ${JSON.stringify(r)}`);
}

await runBench('vm-start', async () => {
  const runDir = path.join(os.tmpdir(), `mfb-${randomBytes(3).toString('hex')}`);
  const host = await managed(
    'VmHost',
    VmHost.open(loadConfig({ ...process.env, MAYFLY_RUN_DIR: runDir }), (p) => {
      if (p.done === undefined) progress(`image: ${p.step}`);
    }),
    (h) => h.close(),
  );
  const d = host.driver;
  const baseline = row('host: spawn `node -e 0` (baseline)');

  let cpu0 = childCpu();
  let spawnCpu0 = spawnCpu;
  const cold = row(`cold boot: prepare + boot to ready (${d.accel})`);
  const coldCreate = row('  of which QEMU start, paused (-S)');
  for (let i = 0; i < BOOTS; i++) {
    baseline.samples.push(spawnBaseline());
    const t = performance.now();
    const s = await host.prepare(128);
    try {
      coldCreate.samples.push(performance.now() - t);
      await s.boot();
      cold.samples.push(performance.now() - t);
    } finally {
      await s.destroy('bench');
    }
    progress(`cold boot ${i + 1}/${BOOTS}: ${cold.samples.at(-1)!.toFixed(0)} ms`);
  }

  const coldCpu = (childCpu() - cpu0 - (spawnCpu - spawnCpu0)) / Math.max(1, BOOTS);
  const tpl = await host.template(128);
  const template = row('template: cold boot + snapshot (once per size)');
  template.samples.push(tpl.makeMs);

  const clone = row('clone: prepareClone + resumeClone');
  const clonePrep = row('  of which prepareClone (QEMU start + restore)');
  const cloneResume = row('  of which resumeClone (cont, reseed, ready)');
  const pool = row('pool unpause: cont + init + first call');
  const poolCont = row('  of which cont (QMP)');
  const poolInit = row('  of which init (load the function)');
  const poolCall = row('  of which first call');
  const destroy = row('destroy a clone that served a call (SIGKILL, reap)');
  cpu0 = childCpu();
  spawnCpu0 = spawnCpu;
  for (let i = 0; i < CLONES; i++) {
    baseline.samples.push(spawnBaseline());
    let t = performance.now();
    const s = await host.prepareClone(128);
    try {
      const t1 = performance.now();
      clonePrep.samples.push(t1 - t);
      await s.resumeClone(randomBytes(64));
      const t2 = performance.now();
      cloneResume.samples.push(t2 - t1);
      clone.samples.push(t2 - t);
      // As the worker's pool keeps it: resumed once, paused until a call takes it.
      await d.pause(s.vm);
      t = performance.now();
      await d.start(s.vm);
      const a = performance.now();
      await s.init(fn);
      const b = performance.now();
      await callOnce(s, `p${i}`);
      const c = performance.now();
      poolCont.samples.push(a - t);
      poolInit.samples.push(b - a);
      poolCall.samples.push(c - b);
      pool.samples.push(c - t);
      await s.destroy('bench');
      destroy.samples.push(performance.now() - c);
    } finally {
      await s.destroy('bench');
    }
    if ((i + 1) % 5 === 0) progress(`clone ${i + 1}/${CLONES}`);
  }

  const cloneCpu = (childCpu() - cpu0 - (spawnCpu - spawnCpu0)) / Math.max(1, CLONES);

  const warm = row('warm unpause: cont + call (VM served calls)');
  const pauseUnpause = row('QMP stop + cont on a running VM');
  const running = row('call on a running VM');
  const s = await host.prepareClone(128);
  try {
    await s.resumeClone(randomBytes(64));
    await s.init(fn);
    for (let i = 0; i < 5; i++) await callOnce(s, `w${i}`);
    for (let i = 0; i < ROUNDS; i++) {
      if (i % 5 === 0) baseline.samples.push(spawnBaseline());
      await d.pause(s.vm);
      let t = performance.now();
      await d.start(s.vm);
      await callOnce(s, `u${i}`);
      warm.samples.push(performance.now() - t);

      t = performance.now();
      await d.pause(s.vm);
      await d.start(s.vm);
      pauseUnpause.samples.push(performance.now() - t);

      t = performance.now();
      await callOnce(s, `r${i}`);
      running.samples.push(performance.now() - t);
    }
  } finally {
    await s.destroy('bench');
  }

  const experiment = row('EXPERIMENT resumeClone, template reseeded once');
  if (WARM_TEMPLATE) {
    const dir = path.join(runDir, 'warm-template');
    const ramPath = path.join('/dev/shm', `mfb-warm-${process.pid}`);
    const statePath = path.join(dir, 'state');
    fs.mkdirSync(dir, { recursive: true });
    const base = { kernelPath: host.image.kernelPath, initrdPath: host.image.initrdPath, memoryMiB: tpl.memoryMiB };
    try {
      const t = new Session(d, await d.create({ ...base, id: 'warmtpl', memoryFile: { path: ramPath, shared: true } }), host.limits);
      try {
        await t.boot();
        await t.resumeClone(randomBytes(64));
        await d.snapshot(t.vm, statePath);
      } finally {
        await t.destroy('template saved');
      }
      for (let i = 0; i < Math.min(CLONES, 10); i++) {
        const vm = await d.create({ ...base, id: `warmclone${i}`, memoryFile: { path: ramPath, shared: false }, incoming: true });
        const c = new Session(d, vm, host.limits);
        try {
          await d.restore(vm, statePath);
          const t0 = performance.now();
          await c.resumeClone(randomBytes(64));
          experiment.samples.push(performance.now() - t0);
        } finally {
          await c.destroy('bench');
        }
      }
    } finally {
      fs.rmSync(ramPath, { force: true });
    }
  }

  process.stdout.write(
    `\n${table([cold, coldCreate, template, clone, clonePrep, cloneResume, pool, poolCont, poolInit, poolCall, destroy, warm, pauseUnpause, running, ...(WARM_TEMPLATE ? [experiment] : [])], baseline)}\n`,
  );
  process.stdout.write(
    `\n${grid(
      ['CPU per VM (QEMU process, all threads; measured once reaped)', 'CPU ms', 'x node -e 0'],
      [
        ['host: `node -e 0`', (spawnCpu / spawns) * 1000, 1],
        ['cold boot + destroy', coldCpu * 1000, coldCpu / (spawnCpu / spawns)],
        ['clone + pool unpause + init + first call + destroy', cloneCpu * 1000, cloneCpu / (spawnCpu / spawns)],
      ],
    )}\n`,
  );
  const med = (r: { samples: number[] }) => percentile(r.samples, 50);
  const b = med(baseline);
  verdict(
    'vm-start',
    `median start vs node -e 0 (${b.toFixed(1)} ms): cold ${(med(cold) / b).toFixed(1)}x, clone ${(med(clone) / b).toFixed(2)}x, ` +
      `pool unpause+call ${(med(pool) / b).toFixed(2)}x, warm unpause+call ${(med(warm) / b).toFixed(3)}x ` +
      `(no numeric target; LightVM's claim "faster than a process" holds for ${[
        ['clone', clone],
        ['pool', pool],
        ['warm', warm],
      ]
        .filter(([, r]) => med(r as typeof clone) < b)
        .map(([n]) => n)
        .join(', ') || 'none'})`,
  );
});
