/**
 * Runs INSIDE the nested Xen host's dom0 (started by infra/xen/dom0-init.sh).
 * 1. Driver checks against real `xl`: a bad config fails with a clear error and
 *    leaves no domain; create -p / unpause / pause / unpause / destroy of a real
 *    guest whose agent answers over hvc0; a "crashed worker" leaves a domain that
 *    the next driver with the same prefix sweeps; xl save / restore of a booted guest.
 * 2. Starts the worker (MAYFLY_DRIVER=xen) connected to the outer nats-server,
 *    until the outer test publishes on mayfly.xentest.stop; then stops it and
 *    reports the domains left behind.
 * Every result is one `XENTEST <json>` line on the console (the outer test reads
 * QEMU's serial output) and a message on mayfly.xentest.report.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { loadConfig } from '../../contracts/config.js';
import { XenDriver } from '../../worker/driver/xen.js';
import { loadPrebuiltImage } from '../../worker/driver/xl-image.js';
import { runTool } from '../../worker/driver/xl-run.js';
import { parseXlListJson } from '../../worker/driver/xl-config.js';
import { GuestSession, DEFAULT_SESSION_LIMITS } from '../../worker/guest-session.js';
import { guestMemoryMiB } from '../../worker/vm-host.js';
import { KERNEL_FN } from './kernel-fn.js';


const EVENT = { method: 'POST', path: '/', query: {}, headers: {}, body: '', isBase64Encoded: false };

let nc: NatsConnection | null = null;

/** Every driver here pins guests like the worker does (MAYFLY_XEN_GUEST_CPUS, set by nested-host.ts). */
function guestCpus(): { cpus?: string } {
  const cpus = loadConfig().MAYFLY_XEN_GUEST_CPUS;
  return cpus ? { cpus } : {};
}
let lastVm = '';
function report(check: string, data: Record<string, unknown>): void {
  const line = JSON.stringify({ check, ...data });
  console.log(`XENTEST ${line}`);
  try {
    nc?.publish('mayfly.xentest.report', line);
  } catch {
    /* the console line is enough */
  }
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, Math.round(performance.now() - t0)];
}

/** The guest's console as xenconsoled logged it (for failed checks). */
function guestLog(name: string, bytes = 3000): string {
  try {
    const t = fs.readFileSync(`/var/log/xen/console/guest-${name}.log`, 'latin1');
    return t.slice(-bytes).replace(/[^\x20-\x7e\n]/g, '.');
  } catch (err) {
    return `(no guest log: ${(err as Error).message})`;
  }
}

async function debugBoot(image: Awaited<ReturnType<typeof loadPrebuiltImage>>, memoryMiB: number): Promise<void> {
  const drv = await XenDriver.open({ ...guestCpus(), runDir: '/run/mayfly-dbg', namePrefix: 'mayfly-dbg-' });
  const vm = await drv.create({ id: 'dbg', kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB, kernelArgs: ['console=hvc0', 'loglevel=7'] });
  await drv.start(vm);
  await Promise.race([vm.exited, new Promise((r) => setTimeout(r, 90_000))]);
  report('debug-boot', { ok: true, state: vm.state, log: guestLog('mayfly-dbg-dbg', 6000) });
  await drv.close();
}

async function driverChecks(): Promise<void> {
  const imageDir = process.env.MAYFLY_IMAGE_DIR!;
  const image = await loadPrebuiltImage(imageDir);
  const memoryMiB = guestMemoryMiB(image, 64);
  const limits = { ...DEFAULT_SESSION_LIMITS, bootTimeoutMs: 240_000, initTimeoutMs: 120_000 };
  const runDir = '/run/mayfly-chk';
  const id = () => `c${randomBytes(4).toString('hex')}`;
  if (process.env.MAYFLY_XEN_DEBUG_BOOT === '1') await debugBoot(image, memoryMiB).catch((err: Error) => report('debug-boot', { ok: false, message: err.message }));

  // (a) xl failure handling: a config xl rejects; the error must say why, and nothing is left.
  const drv = await XenDriver.open({ ...guestCpus(), runDir, namePrefix: 'mayfly-chk-' });
  try {
    const t0 = performance.now();
    let message = '';
    let code = '';
    try {
      await drv.create({ id: id(), kernelPath: '/nonexistent/vmlinux', initrdPath: image.initrdPath, memoryMiB });
    } catch (err) {
      message = (err as Error).message;
      code = (err as { code?: string }).code ?? '';
    }
    const left = await drv.ownDomains();
    report('bad-config', { ok: code === 'VM_START_FAILED' && /xl create -p/.test(message) && left.length === 0, code, message, left: left.map((d) => d.name), ms: Math.round(performance.now() - t0) });
  } catch (err) {
    report('bad-config', { ok: false, message: `check itself failed: ${(err as Error).message}` });
  }

  // (b) lifecycle of a real guest: create -p, unpause (boot to ready), run, pause, unpause, run, destroy.
  try {
    lastVm = '';
    const [vm, createMs] = await timed(() => drv.create({ id: id(), kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB }));
    lastVm = `mayfly-chk-${vm.id}`;
    const session = new GuestSession(drv, vm, limits);
    try {
      const prepared = await drv.queryState(vm);
      const bootMs = Math.round(await session.boot());
      await session.init({ functionName: 'kernel', code: KERNEL_FN, handler: 'handler', env: {}, memoryLimitInMB: 64 });
      const first = await session.invoke({ callId: 'c1', event: EVENT, timeoutMs: 60_000 });
      const [, pauseMs] = await timed(() => drv.pause(vm));
      const paused = await drv.queryState(vm);
      const [, unpauseMs] = await timed(() => drv.start(vm));
      const running = await drv.queryState(vm);
      const second = await session.invoke({ callId: 'c2', event: EVENT, timeoutMs: 60_000 });
      const value = first.ok ? (first.value as Record<string, string>) : null;
      report('lifecycle', {
        ok: prepared === 'prepared' && paused === 'paused' && running === 'running' && first.ok && second.ok && value?.hypervisor === 'xen',
        states: { prepared, paused, running },
        value,
        secondOk: second.ok,
        skippedConsoleBytes: vm.channel instanceof Object && 'skippedBytes' in vm.channel ? (vm.channel as { skippedBytes: number }).skippedBytes : null,
        ms: { create: createMs, bootToReady: bootMs, pause: pauseMs, unpause: unpauseMs },
      });
    } finally {
      const [, destroyMs] = await timed(() => session.destroy('check done'));
      const left = await drv.ownDomains();
      report('destroy', { ok: left.length === 0, left: left.map((d) => d.name), ms: destroyMs });
    }
  } catch (err) {
    report('lifecycle', { ok: false, message: (err as Error).message, guestLog: lastVm ? guestLog(lastVm) : '' });
  }

  // (b2) the tinyx kernel built for Xen (tinyconfig + microvm + Xen fragments: hvc_xen built in, no
  // modules) boots as a PVH guest from the same kind of image and runs a function.
  const tinyxDir = process.env.MAYFLY_XEN_TINYX_IMAGE_DIR;
  if (tinyxDir) {
    let name = '';
    try {
      const tiny = await loadPrebuiltImage(tinyxDir);
      const [vm, createMs] = await timed(() => drv.create({ id: id(), kernelPath: tiny.kernelPath, initrdPath: tiny.initrdPath, memoryMiB: guestMemoryMiB(tiny, 64) }));
      name = `mayfly-chk-${vm.id}`;
      const s = new GuestSession(drv, vm, limits);
      try {
        const bootMs = Math.round(await s.boot());
        await s.init({ functionName: 'kernel', code: KERNEL_FN, handler: 'handler', env: {}, memoryLimitInMB: 64 });
        const r = await s.invoke({ callId: 'tx1', event: EVENT, timeoutMs: 60_000 });
        const value = r.ok ? (r.value as Record<string, string>) : null;
        report('tinyx', {
          ok: r.ok && value?.hypervisor === 'xen' && value.release === tiny.kernelRelease,
          value,
          kernel: { release: tiny.kernelRelease, kind: tiny.kernelKind, bytes: tiny.sizes.kernelBytes },
          ms: { create: createMs, bootToReady: bootMs },
        });
      } finally {
        await s.destroy('check done');
      }
    } catch (err) {
      report('tinyx', { ok: false, message: (err as Error).message, guestLog: name ? guestLog(name) : '' });
    }
  }

  // (c) worker crash: a driver that dies without cleaning up leaves a domain; the next one with the same prefix sweeps it.
  try {
    const crashed = await XenDriver.open({ ...guestCpus(), runDir, namePrefix: 'mayfly-crash-' });
    await crashed.create({ id: id(), kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB });
    const before = (await crashed.ownDomains()).map((d) => d.name);
    // Another worker's prefix must not be touched by this sweep.
    const other = await XenDriver.open({ ...guestCpus(), runDir, namePrefix: 'mayfly-other-' });
    const otherVm = await other.create({ id: id(), kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB });
    const next = await XenDriver.open({ ...guestCpus(), runDir, namePrefix: 'mayfly-crash-' }); // sweeps in open()
    const after = (await next.ownDomains()).map((d) => d.name);
    const otherStill = (await other.ownDomains()).length;
    await other.destroy(otherVm);
    report('crash-sweep', { ok: before.length === 1 && after.length === 0 && otherStill === 1, before, after, otherStill });
  } catch (err) {
    report('crash-sweep', { ok: false, message: (err as Error).message });
  }

  // (d) templates: xl save of a booted guest, xl restore -p into a new domain (own name), resume, answer.
  if (process.env.MAYFLY_XEN_CHECK_SAVE !== '0') {
    try {
      const vm = await drv.create({ id: id(), kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB });
      const s = new GuestSession(drv, vm, limits);
      await s.boot();
      const statePath = `/tmp/tpl-${vm.id}.save`;
      const [, saveMs] = await timed(() => drv.snapshot(vm, statePath));
      await s.destroy('saved');
      const clone = await drv.create({ id: id(), kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB, incoming: true });
      const [, restoreMs] = await timed(() => drv.restore(clone, statePath));
      const cs = new GuestSession(drv, clone, limits);
      const resumeMs = Math.round(await cs.resumeClone(randomBytes(32)));
      await cs.init({ functionName: 'kernel', code: KERNEL_FN, handler: 'handler', env: {}, memoryLimitInMB: 64 });
      const r = await cs.invoke({ callId: 'c3', event: EVENT, timeoutMs: 60_000 });
      await cs.destroy('done');
      // The state file is the guest's whole RAM, on dom0's /tmp (tmpfs, i.e. dom0 memory).
      fs.rmSync(statePath, { force: true });
      report('save-restore', { ok: r.ok, ms: { save: saveMs, restore: restoreMs, resumeToReady: resumeMs } });
    } catch (err) {
      report('save-restore', { ok: false, message: (err as Error).message });
    }
  }
  await drv.close();
}

/** Runs N fpu-stress.js processes for `seconds`; each reports its mismatch counts (or how it died). */
async function stressProcs(n: number, seconds: number, threads: number): Promise<Array<Record<string, unknown>>> {
  return Promise.all(
    Array.from({ length: n }, () =>
      new Promise<Record<string, unknown>>((resolve) => {
        const p = spawn(process.execPath, ['dist/test/xen/fpu-stress.js', String(seconds), String(threads)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
        p.once('exit', (code, signal) => {
          let parsed: Record<string, unknown> = {};
          try {
            parsed = JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, unknown>;
          } catch {
            parsed = { output: out.slice(-600) };
          }
          resolve({ code, signal, ...parsed });
        });
      }),
    ),
  );
}

/** A guest function that checks its own floating-point results for `seconds` (the guest side of `stress`). */
const FPU_FN = `
function compute(seed) {
  let x = seed, acc = 0;
  for (let i = 1; i < 20000; i++) { x = x * 1.000001 + Math.sqrt(i) / (i + 0.5); acc += Math.sin(x) * 0.25 - x / (i * 3.0 + 1.0); }
  return acc;
}
export async function handler(event) {
  const seconds = Number(JSON.parse(event.body || '{}').seconds || 10);
  const ref = compute(1.2345);
  let rounds = 0, bad = 0;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (!Object.is(compute(1.2345), ref)) bad++;
    rounds++;
    if (rounds % 4 === 0) await new Promise((r) => setImmediate(r));
  }
  return { rounds, bad };
}`;

/**
 * MAYFLY_XEN_STRESS_S: does FPU/SIMD state survive context switches in dom0?
 * Phase "dom0-only": stress processes alone. Phase "with-guest": the same while
 * MAYFLY_XEN_STRESS_GUESTS guest domains (default 2) run the same kind of
 * floating-point loop, so Xen keeps switching vCPUs between dom0 and them on
 * its 2 CPUs; the guests check their own results too.
 */
async function stress(seconds: number): Promise<void> {
  const procs = Number(process.env.MAYFLY_XEN_STRESS_PROCS ?? 2);
  const threads = Number(process.env.MAYFLY_XEN_STRESS_THREADS ?? 2);
  const nGuests = Number(process.env.MAYFLY_XEN_STRESS_GUESTS ?? 2);
  const bad = (rs: Array<Record<string, unknown>>) => rs.some((r) => r.code !== 0 || Number(r.floatMismatches) > 0 || Number(r.copyMismatches) > 0);
  if (process.env.MAYFLY_XEN_STRESS_ALONE !== '0') {
    const alone = await stressProcs(procs, seconds, threads);
    report('stress-dom0-only', { ok: !bad(alone), seconds, results: alone });
  }
  const image = await loadPrebuiltImage(process.env.MAYFLY_IMAGE_DIR!);
  const drv = await XenDriver.open({ ...guestCpus(), runDir: '/run/mayfly-stress', namePrefix: 'mayfly-stress-' });
  const limits = { ...DEFAULT_SESSION_LIMITS, bootTimeoutMs: 240_000, initTimeoutMs: 120_000 };
  try {
    const sessions: GuestSession[] = [];
    for (let i = 0; i < nGuests; i++) {
      const vm = await drv.create({ id: `g${i}`, kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB: guestMemoryMiB(image, 64) });
      const s = new GuestSession(drv, vm, limits);
      await s.boot();
      await s.init({ functionName: 'fpu', code: FPU_FN, handler: 'handler', env: {}, memoryLimitInMB: 64 });
      sessions.push(s);
    }
    const guests = Promise.all(
      sessions.map((s, i) =>
        s
          .invoke({ callId: `fpu${i}`, event: { ...EVENT, body: JSON.stringify({ seconds }) }, timeoutMs: seconds * 1000 + 120_000 })
          .then((r) => (r.ok ? r.value : { error: r }))
          .catch((err: Error) => ({ error: err.message }))
          .then((v) => ((v as { error?: unknown }).error ? { ...(v as object), guestLog: guestLog(`mayfly-stress-g${i}`, 1500) } : v)),
      ),
    );
    const withGuest = await stressProcs(procs, seconds, threads);
    const guestResults = (await guests) as Array<Record<string, unknown>>;
    for (const s of sessions) await s.destroy('stress done').catch(() => {});
    report('stress-with-guest', { ok: !bad(withGuest) && guestResults.every((g) => g.bad === 0), seconds, guests: guestResults, results: withGuest });
  } catch (err) {
    report('stress-with-guest', { ok: false, message: (err as Error).message });
  }
  await drv.close();
}

/** Triple-fault lines in Xen's console ring (`xl dmesg`; the outer side also counts them in QEMU's serial log). */
async function xenTripleFaults(): Promise<string[]> {
  const r = await runTool('xl', ['dmesg'], 30_000).catch(() => null);
  return (r?.stdout ?? '').split('\n').filter((l) => /Triple fault/.test(l));
}

/**
 * MAYFLY_XEN_BOOTLOOP=N: boots N guests the way the worker does (create -p, unpause, agent's
 * ready, init + invoke a trivial function, destroy), MAYFLY_XEN_BOOTLOOP_CONCURRENCY at a time
 * (default 1), and counts the failures; Xen's "Triple fault" lines are counted from `xl dmesg`.
 * Knobs for the nested-host triple-fault hunt (all optional):
 *   MAYFLY_XEN_BOOTLOOP_BURN=K      K busy-loop processes in dom0 during the loop (like a busy worker)
 *   MAYFLY_XEN_BOOTLOOP_PIN=G[:D]   pin every guest vCPU to pCPU G (`xl vcpu-pin` before unpause),
 *                                   and dom0's vCPU to pCPU D
 *   MAYFLY_XEN_BOOTLOOP_KARGS='a b' extra guest kernel arguments (e.g. 'console=hvc0 loglevel=7':
 *                                   printk before the agent's first frame is skipped by the host)
 *   MAYFLY_XEN_BOOTLOOP_VCPUS=V     guest vCPUs (default 1)
 */
async function bootloop(n: number): Promise<void> {
  const conc = Math.max(1, Number(process.env.MAYFLY_XEN_BOOTLOOP_CONCURRENCY ?? 1));
  const burnN = Number(process.env.MAYFLY_XEN_BOOTLOOP_BURN ?? 0);
  const pin = process.env.MAYFLY_XEN_BOOTLOOP_PIN ?? '';
  const [guestCpu, dom0Cpu] = pin ? pin.split(':') : [];
  const kargs = (process.env.MAYFLY_XEN_BOOTLOOP_KARGS ?? '').split(' ').filter(Boolean);
  const vcpus = Number(process.env.MAYFLY_XEN_BOOTLOOP_VCPUS ?? 1);
  const image = await loadPrebuiltImage(process.env.MAYFLY_IMAGE_DIR!);
  const memoryMiB = guestMemoryMiB(image, 64);
  const limits = { ...DEFAULT_SESSION_LIMITS, bootTimeoutMs: 120_000, initTimeoutMs: 120_000 };
  const drv = await XenDriver.open({ ...guestCpus(), runDir: '/run/mayfly-loop', namePrefix: 'mayfly-loop-' });
  if (dom0Cpu) await runTool('xl', ['vcpu-pin', '0', 'all', dom0Cpu], 30_000).catch((err: Error) => report('bootloop-note', { ok: false, message: `dom0 pin: ${err.message}` }));
  const burners = Array.from({ length: burnN }, () => spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  const before = (await xenTripleFaults()).length;
  const t0 = performance.now();
  const fails: Array<Record<string, unknown>> = [];
  const bootMs: number[] = [];
  let next = 0;
  let okCount = 0;
  const one = async (i: number): Promise<void> => {
    const tf0 = (await xenTripleFaults()).length;
    let name = '';
    let stage = 'create';
    let s: GuestSession | null = null;
    try {
      const vm = await drv.create({ id: `b${i}`, kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB, vcpus, kernelArgs: kargs });
      name = `mayfly-loop-b${i}`;
      if (guestCpu) await runTool('xl', ['vcpu-pin', name, 'all', guestCpu], 30_000);
      if (i === 0) {
        // Where the vCPUs may run (MAYFLY_XEN_GUEST_CPUS / _PIN), as Xen sees it: `xl vcpu-list` of the first guest and dom0.
        const vl = await runTool('xl', ['vcpu-list'], 30_000).catch((err: Error) => ({ stdout: err.message }));
        report('bootloop-affinity', { ok: true, vcpuList: vl.stdout.trim().split('\n') });
      }
      s = new GuestSession(drv, vm, limits);
      stage = 'boot';
      bootMs.push(Math.round(await s.boot()));
      stage = 'init';
      await s.init({ functionName: 'kernel', code: KERNEL_FN, handler: 'handler', env: {}, memoryLimitInMB: 64 });
      stage = 'invoke';
      const r = await s.invoke({ callId: `b${i}`, event: EVENT, timeoutMs: 60_000 });
      if (!r.ok) throw new Error(`invoke failed: ${JSON.stringify(r).slice(0, 300)}`);
      okCount++;
      console.log(`[bootloop] ${i} ok boot ${bootMs.at(-1)} ms`);
    } catch (err) {
      const tf = await xenTripleFaults();
      const f = { i, stage, message: (err as Error).message.slice(0, 300), tripleFaultsDuring: tf.length - tf0, lastTriple: tf.at(-1) ?? '', guestLog: name ? guestLog(name, 1500) : '' };
      fails.push(f);
      report('bootloop-fail', { ok: false, ...f });
    } finally {
      await s?.destroy('loop').catch(() => {});
    }
  };
  await Promise.all(
    Array.from({ length: conc }, async () => {
      for (let i = next++; i < n; i = next++) await one(i);
    }),
  );
  for (const b of burners) b.kill('SIGKILL');
  const after = await xenTripleFaults();
  report('bootloop', {
    ok: fails.length === 0,
    boots: n,
    okCount,
    failed: fails.length,
    tripleFaults: after.length - before,
    concurrency: conc,
    burn: burnN,
    pin,
    kargs: kargs.join(' '),
    vcpus,
    bootMs: { median: median(bootMs), max: Math.max(0, ...bootMs) },
    seconds: Math.round((performance.now() - t0) / 1000),
    failures: fails.map((f) => ({ i: f.i, stage: f.stage, tf: f.tripleFaultsDuring })),
  });
  await drv.close();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
}

/** test/bench/xen.ts: median ms of each xl operation on a real guest (MAYFLY_XEN_MODE=bench). */
async function bench(): Promise<void> {
  const image = await loadPrebuiltImage(process.env.MAYFLY_IMAGE_DIR!);
  const memoryMiB = guestMemoryMiB(image, 64);
  const runs = Number(process.env.MAYFLY_XEN_BENCH_RUNS ?? 3);
  const types = (process.env.MAYFLY_XEN_BENCH_TYPES ?? 'pvh').split(',') as Array<'pvh' | 'pv'>;
  const limits = { ...DEFAULT_SESSION_LIMITS, bootTimeoutMs: 240_000 };
  for (const type of types) {
    const drv = await XenDriver.open({ ...guestCpus(), runDir: '/run/mayfly-bench', namePrefix: `mayfly-b${type}-`, type });
    const t: Record<string, number[]> = { create: [], 'create -p': [], unpause_first: [], 'boot to ready': [], pause: [], unpause: [], save: [], restore: [], destroy: [] };
    for (let i = 0; i < runs; i++) {
      try {
        const spec = { id: `r${i}`, kernelPath: image.kernelPath, initrdPath: image.initrdPath, memoryMiB };
        // plain `xl create` (not paused): the whole toolstack path at once
        const cfg = `/run/mayfly-bench/plain-${type}-${i}.cfg`;
        fs.writeFileSync(cfg, drv.guestConfig(spec, `mayfly-b${type}-plain${i}`));
        const [, createMs] = await timed(() => runTool('xl', ['create', cfg], 180_000));
        t.create!.push(createMs);
        await runTool('xl', ['destroy', `mayfly-b${type}-plain${i}`], 60_000);
        // split: create -p, then unpause, boot to the agent's ready
        const [vm, cpMs] = await timed(() => drv.create(spec));
        t['create -p']!.push(cpMs);
        const s = new GuestSession(drv, vm, limits);
        const bootMs = Math.round(await s.boot());
        t['boot to ready']!.push(bootMs);
        const [, pMs] = await timed(() => drv.pause(vm));
        t.pause!.push(pMs);
        const [, uMs] = await timed(() => drv.start(vm));
        t.unpause!.push(uMs);
        const statePath = `/tmp/bench-${type}-${i}.save`;
        const [, sMs] = await timed(() => drv.snapshot(vm, statePath));
        t.save!.push(sMs);
        await s.destroy('saved');
        const clone = await drv.create({ ...spec, id: `c${i}`, incoming: true });
        const [, rMs] = await timed(() => drv.restore(clone, statePath));
        t.restore!.push(rMs);
        const [, dMs] = await timed(() => drv.destroy(clone));
        t.destroy!.push(dMs);
        fs.rmSync(statePath, { force: true });
      } catch (err) {
        report('bench-error', { ok: false, type, run: i, message: (err as Error).message });
      }
    }
    delete t.unpause_first;
    report('bench', { ok: true, type, runs, memoryMiB, median: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)])), all: t });
    await drv.close();
  }
}

async function main(): Promise<void> {
  const deadline = setTimeout(() => {
    console.log('XENTEST {"check":"controller","ok":false,"message":"overall timeout"}');
    process.exit(3);
  }, Number(process.env.MAYFLY_XEN_CONTROLLER_TIMEOUT_MS ?? 40 * 60_000));
  deadline.unref();
  const config = loadConfig();
  nc = await connect({ servers: config.MAYFLY_NATS_URL, reconnect: true, maxReconnectAttempts: -1 }).catch((err: Error) => {
    console.log(`XENTEST {"check":"nats","ok":false,"message":${JSON.stringify(err.message)}}`);
    return null;
  });
  report('dom0', { ok: true, node: process.version, uptimeS: Number((await runTool('cut', ['-d ', '-f1', '/proc/uptime'], 5000)).stdout.trim()) });
  if (process.env.MAYFLY_XEN_MODE === 'bench') {
    await bench();
    await nc?.close().catch(() => {});
    return;
  }
  if (Number(process.env.MAYFLY_XEN_BOOTLOOP ?? 0) > 0) {
    await bootloop(Number(process.env.MAYFLY_XEN_BOOTLOOP));
    await nc?.flush().catch(() => {});
    await nc?.close().catch(() => {});
    return;
  }
  if (process.env.MAYFLY_XEN_SKIP_DRIVER_CHECKS !== '1') await driverChecks();
  if (Number(process.env.MAYFLY_XEN_STRESS_S ?? 0) > 0) {
    await stress(Number(process.env.MAYFLY_XEN_STRESS_S));
    if (process.env.MAYFLY_XEN_STRESS_ONLY === '1') {
      await nc?.close().catch(() => {});
      return;
    }
  }

  // The worker, as operators run it in a dom0.
  const stop = new Promise<void>((resolve) => {
    nc?.subscribe('mayfly.xentest.stop', { callback: () => resolve() });
  });
  const worker = spawn(process.execPath, ['dist/cli/mayfly.js', 'worker'], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  // Whole lines only, each with the prefix (a chunk may end mid-line).
  const pipe = (s: NodeJS.ReadableStream) => {
    let partial = '';
    s.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) process.stdout.write(`[worker] ${l}\n`);
    });
    s.on('end', () => partial && process.stdout.write(`[worker] ${partial}\n`));
  };
  pipe(worker.stdout!);
  pipe(worker.stderr!);
  const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
  const meminfo = Object.fromEntries(
    fs.readFileSync('/proc/meminfo', 'utf8').split('\n').filter((l) => /^(MemFree|MemAvailable|Cached|Shmem):/.test(l)).map((l) => [l.split(':')[0]!, l.split(':')[1]!.trim()]),
  );
  report('worker', { ok: true, started: true, pid: worker.pid, meminfo });
  const how = await Promise.race([stop.then(() => 'stop'), exited.then((c) => `exited ${c}`)]);
  if (how === 'stop') {
    worker.kill('SIGTERM');
    const t = setTimeout(() => worker.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(t);
  }
  const all = parseXlListJson((await runTool('xl', ['list', '-l'], 60_000)).stdout).filter((d) => d.domid !== 0);
  report('final', { ok: how === 'stop' && all.length === 0, how, leftover: all.map((d) => d.name) });
  await nc?.flush().catch(() => {});
  await nc?.close().catch(() => {});
}

main().catch((err) => {
  console.log(`XENTEST ${JSON.stringify({ check: 'controller', ok: false, message: (err as Error).stack ?? String(err) })}`);
  process.exit(1);
});
