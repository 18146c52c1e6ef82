/**
 * Density (issue 19), on real QEMU VMs through the VM manager:
 * - an idle paused warm VM gives its private memory back (paged out to swap:
 *   zram here) and still answers its next call, warm;
 * - admission by the host's measured memory: when MemAvailable would fall under
 *   the reserve, idle warm VMs are evicted oldest first, and when that is not
 *   enough the call is refused (the scheduler then tries another host). The
 *   host's MemAvailable reading is the one thing simulated here: driving the
 *   real machine into memory pressure would take every other test with it.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FunctionRecord } from '../../contracts/functions.js';
import { createLogger } from '../../lib/logger.js';
import { HostMemory } from '../../worker/host-memory.js';
import { VmManager, type VmManagerOptions } from '../../worker/vm-manager.js';
import { childQemuPids, isAlive } from '../helpers/processes.js';
import { ensureSwap } from '../helpers/swap.js';
import { event, openTestHost } from '../helpers/vm-host.js';

const base: FunctionRecord = {
  name: 'dense', runtime: 'node', handler: 'handler', codeHash: 'h', codeBytes: 1, envVars: {}, memoryMiB: 128,
  timeoutMs: 20_000, isolation: 'per-function', image: 'mayfly/node', labels: {}, annotations: { 'com.mayfly.snapshot': 'false' },
  secrets: [], version: 1, createdAt: '', updatedAt: '',
};
const CODE = `export const handler = async (e) => ({ got: e.body, n: (globalThis.n = (globalThis.n ?? 0) + 1) });`;
const source = { code: CODE, secrets: {} };

let undoSwap: () => void = () => {};
const managers: VmManager[] = [];

beforeAll(() => {
  undoSwap = ensureSwap();
});

afterAll(async () => {
  for (const m of managers) await m.close(); // each closes its own VmHost
  expect(childQemuPids()).toEqual([]);
  undoSwap();
});

/** Closes a manager (and its VmHost) now: two VmHosts of one process share the template folder. */
async function done(mgr: VmManager): Promise<void> {
  managers.splice(managers.indexOf(mgr), 1);
  await mgr.close();
}

/** A manager on a VmHost of its own (closing a manager closes its host and templates). */
async function manager(opts: Partial<VmManagerOptions>): Promise<VmManager> {
  const { host } = await openTestHost();
  const mgr = new VmManager(
    host,
    { memoryBudgetMiB: 4096, poolSize: 0, poolMax: 0, poolFunctionMiB: 128, warmTtlMs: 60_000, clones: true, warmLingerMs: 0, ...opts },
    createLogger('test'),
  );
  managers.push(mgr);
  return mgr;
}

async function call(mgr: VmManager, fn: FunctionRecord, body: string) {
  const r = mgr.reserve(fn);
  if (!r) return null;
  const lease = await r.acquire(fn, source);
  try {
    const out = await lease.session.invoke({ callId: `${fn.name}-${body}`, event: event(body), timeoutMs: 20_000 });
    return { out, start: lease.start, pid: qemuPid(lease.session.vm.id), ramPath: lease.session.vm.spec.memoryFile?.path };
  } finally {
    await lease.release(true);
  }
}

function qemuPid(vmId: string): number {
  const pid = childQemuPids().find((p) => fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`mayfly-${vmId}`));
  if (pid === undefined) throw new Error(`no QEMU for VM ${vmId}`);
  return pid;
}

/** Resident KiB of the guest RAM file's mapping in a QEMU (the template's pages, shared by its clones). */
function guestRamRssKiB(pid: number, ramPath: string): number {
  const ino = fs.statSync(ramPath).ino;
  let rss = 0;
  let inRam = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S{4} \S+ \S+ (\d+)/.exec(line);
    if (m) inRam = Number(m[1]) === ino;
    else if (inRam && line.startsWith('Rss:')) rss += Number(/(\d+)/.exec(line)![1]);
  }
  return rss;
}

function rollup(pid: number): { pssMiB: number; swapMiB: number } {
  const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN);
  return { pssMiB: kib('Pss') / 1024, swapMiB: kib('Swap') / 1024 };
}

const until = async (what: string, ok: () => boolean, ms = 20_000) => {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('idle reclaim', () => {
  it('pages an idle paused warm VM out to swap, and its next call is still warm and right', async () => {
    const reclaimed: number[] = [];
    const mgr = await manager({ idleReclaimMs: 300, onReclaim: (b) => reclaimed.push(b) });
    const first = await call(mgr, base, 'a');
    expect(first?.out).toMatchObject({ ok: true, value: { got: 'a', n: 1 } });
    const before = rollup(first!.pid);
    const ramBefore = guestRamRssKiB(first!.pid, first!.ramPath!);
    await until('the idle reclaim', () => reclaimed.length === 1);
    const after = rollup(first!.pid);
    // The template's shared pages stay where they are: paging them out would slow every clone.
    expect(ramBefore).toBeGreaterThan(10_000);
    expect(guestRamRssKiB(first!.pid, first!.ramPath!)).toBeGreaterThan(ramBefore * 0.9);
    // Paged out: at least 8 MiB of this VM's private memory went to swap and its PSS fell by as much.
    expect(reclaimed[0]!).toBeGreaterThan(8 * 2 ** 20);
    expect(after.swapMiB).toBeGreaterThan(8);
    expect(before.pssMiB - after.pssMiB).toBeGreaterThan(8);

    const second = await call(mgr, base, 'b');
    expect(second).toMatchObject({ start: 'warm', pid: first!.pid, out: { ok: true, value: { got: 'b', n: 2 } } });
    // Taken and released again: reclaimed again once idle, not while it served.
    await until('the second idle reclaim', () => reclaimed.length === 2);
    await done(mgr);
  });
});

describe('admission by measured host memory', () => {
  it('evicts idle warm VMs oldest first, then refuses, when MemAvailable would fall under the reserve', async () => {
    let availMiB = 100_000;
    const reserve = 1024;
    const mgr = await manager({ memoryBudgetMiB: 100_000, hostMemory: new HostMemory(reserve, () => availMiB, 0) });
    const a = await call(mgr, { ...base, name: 'old' }, '1');
    const r0 = mgr.reservedMiB;
    const b = await call(mgr, { ...base, name: 'newer' }, '1');
    expect(a?.out.ok && b?.out.ok).toBe(true);
    const needMiB = mgr.reservedMiB - r0; // what one more such VM is admitted with

    // Short by less than the oldest idle VM's measured PSS: evicting it alone makes room.
    availMiB = reserve + needMiB - rollup(a!.pid).pssMiB / 2;
    const c = await call(mgr, { ...base, name: 'third' }, '1');
    expect(c?.out).toMatchObject({ ok: true });
    await until('the oldest VM to be gone', () => !isAlive(a!.pid));
    expect(isAlive(b!.pid)).toBe(true);

    // Far short: every idle VM is evicted and the call is still refused (null: the scheduler tries elsewhere).
    availMiB = reserve - 500;
    expect(mgr.reserve({ ...base, name: 'fourth' })).toBeNull();
    expect(mgr.lastRefusal()).toBe('host memory is short: MemAvailable would fall below the reserve (MAYFLY_HOST_MEMORY_RESERVE_MB=1024)');
    await until('every idle VM to be evicted', () => !isAlive(b!.pid) && !isAlive(c!.pid));
    expect(mgr.stats().vms.warm).toBe(0);

    // Memory back: admitted again.
    availMiB = 100_000;
    expect((await call(mgr, { ...base, name: 'fourth' }, '1'))?.out).toMatchObject({ ok: true });
    await done(mgr);
  });
});
