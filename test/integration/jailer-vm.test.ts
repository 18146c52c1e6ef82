/**
 * The jailer against real QEMU VMs (root only: it is what drops privileges).
 * Two clones of the same template run side by side; each QEMU must run as its
 * own unprivileged uid with no capabilities and no_new_privs, in its own mount
 * and network namespaces and chroot, in its own cgroup with the configured
 * limits. A guest escape cannot be staged, so what an escaped QEMU could reach
 * is checked from processes running as the VM's uid: one on the host, and one
 * started through the VM's own jail (what QEMU itself sees). A VM whose QEMU
 * goes over its memory limit is killed by the kernel and reported as the
 * guest's fault while its neighbour keeps answering.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/config.js';
import { secretsKey } from '../../lib/credentials.js';
import type { QemuDriver } from '../../worker/driver/qemu.js';
import { InvocationError, type GuestSession } from '../../worker/guest-session.js';
import type { VmHost } from '../../worker/vm-host.js';
import { childQemuPids } from '../helpers/processes.js';
import { event, fn, openTestHost } from '../helpers/vm-host.js';

const isRoot = process.getuid?.() === 0;
const MiB = 1024 * 1024;

let host: VmHost;
let runDir: string;
let a: GuestSession;
let b: GuestSession;
let dataDir: string;
const config = loadConfig();

const driver = () => host.driver as unknown as QemuDriver;
const pidOf = (s: GuestSession) => (s.vm as unknown as { proc: ChildProcess }).proc.pid!;
const dirOf = (s: GuestSession) => (s.vm as unknown as { dir: string }).dir;

async function clone(name: string, code = `export async function handler(e) { return '${name} ' + e.body; }`): Promise<GuestSession> {
  const s = await host.prepareClone(128);
  await s.resumeClone(randomBytes(64));
  await s.init(fn(code, name));
  return s;
}

/** Runs `sh -c script` as `uid` (group: the VMs' group) on the host, outside any jail. */
function asUid(uid: number, gid: number, script: string) {
  return spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, `--groups=${gid}`, '--', 'sh', '-c', script], { encoding: 'utf8' });
}

describe.runIf(isRoot)('jailer (real VMs, root)', () => {
  beforeAll(async () => {
    dataDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mfj-data-')), 'data');
    // The worker's data folder as the worker makes it (0700, secrets key 0600).
    secretsKey({ ...config, MAYFLY_DATA_DIR: dataDir });
    ({ host, runDir } = await openTestHost());
    expect(host.jailWhy).toMatch(/^jailer on/);
    [a, b] = [await clone('a'), await clone('b')];
  });

  afterAll(async () => {
    await a?.destroy('test done');
    await b?.destroy('test done');
    await host?.close();
    fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
    expect(childQemuPids()).toEqual([]);
    // No mount of a jail leaked into the host's namespace.
    expect(fs.readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(runDir);
  });

  it('runs each QEMU as its own uid, without capabilities, with no_new_privs, in its own namespaces and chroot', () => {
    const ja = driver().jailOf(a.vm)!;
    const jb = driver().jailOf(b.vm)!;
    expect(ja.uid).toBeGreaterThan(config.MAYFLY_JAILER_UID_BASE);
    expect(jb.uid).not.toBe(ja.uid);
    const status = fs.readFileSync(`/proc/${pidOf(a)}/status`, 'utf8');
    const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)![1]!.trim().split(/\s+/);
    expect(field('Uid')).toEqual(Array(4).fill(String(ja.uid))); // real, effective, saved, fs
    expect(field('Gid')).toEqual(Array(4).fill(String(config.MAYFLY_JAILER_UID_BASE)));
    expect(field('Groups')).toEqual([String(config.MAYFLY_JAILER_UID_BASE)]);
    for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) expect(field(cap), cap).toEqual(['0000000000000000']);
    expect(field('NoNewPrivs')).toEqual(['1']);
    expect(field('Seccomp')).toEqual(['2']); // QEMU's own -sandbox still applies
    for (const ns of ['mnt', 'net', 'ipc']) {
      expect(fs.readlinkSync(`/proc/${pidOf(a)}/ns/${ns}`), ns).not.toBe(fs.readlinkSync(`/proc/self/ns/${ns}`));
    }
    // Its root holds the skeleton only: no /proc, /sys, /home, /work, and only its own VM folder has anything in it.
    const root = `/proc/${pidOf(a)}/root`;
    const top = fs.readdirSync(root);
    for (const hidden of ['proc', 'sys', 'home', 'work', 'var', 'run']) expect(top, hidden).not.toContain(hidden);
    expect(fs.readdirSync(`${root}${dirOf(a)}`).sort()).toEqual(['ch.sock', 'qmp.sock']);
    expect(fs.readdirSync(`${root}${dirOf(b)}`)).toEqual([]);
  });

  it('puts each QEMU in its own cgroup with the memory, pids and CPU limits set', () => {
    const j = driver().jailOf(a.vm)!;
    const cg = j.cgroup!;
    expect(cg).not.toBeNull();
    const own = fs.readFileSync(`/proc/${pidOf(a)}/cgroup`, 'utf8');
    // The cpu cgroup is opt-in (MAYFLY_VM_CPU_LIMITS, see contracts/config.ts).
    expect(cg.dirs.cpu !== undefined).toBe(config.MAYFLY_VM_CPU_LIMITS);
    for (const c of ['memory', 'pids', ...(config.MAYFLY_VM_CPU_LIMITS ? (['cpu'] as const) : [])] as const) {
      expect(cg.dirs[c], c).toBeDefined();
      expect(own, c).toContain(`/vm-${a.vm.id}\n`);
      expect(fs.readFileSync(path.join(cg.dirs[c]!, 'cgroup.procs'), 'utf8').split('\n'), c).toContain(String(pidOf(a)));
    }
    const read = (c: 'memory' | 'cpu' | 'pids', f: string) => fs.readFileSync(path.join(cg.dirs[c]!, f), 'utf8').trim();
    const memoryMiB = 2 * a.vm.spec.memoryMiB + config.MAYFLY_VM_MEMORY_OVERHEAD_MB; // a clone: see vmLimits
    if (cg.layout.version === 'v1') {
      expect(Number(read('memory', 'memory.limit_in_bytes'))).toBe(memoryMiB * MiB);
      expect(read('pids', 'pids.max')).toBe(String(config.MAYFLY_VM_PIDS_MAX));
      if (!config.MAYFLY_VM_CPU_LIMITS) return;
      expect(read('cpu', 'cpu.shares')).toBe(String(config.MAYFLY_VM_CPU_SHARES));
      const quota = config.MAYFLY_VM_CPU_QUOTA_PCT > 0 ? String((config.MAYFLY_VM_CPU_PERIOD_US * config.MAYFLY_VM_CPU_QUOTA_PCT) / 100) : '-1';
      expect(read('cpu', 'cpu.cfs_quota_us')).toBe(quota);
    } else {
      expect(Number(read('memory', 'memory.max'))).toBe(memoryMiB * MiB);
      expect(read('pids', 'pids.max')).toBe(String(config.MAYFLY_VM_PIDS_MAX));
    }
  });

  it("a process with a VM's uid cannot read another VM's files, the templates, the image cache or the worker's data folder", async () => {
    const j = driver().jailOf(a.vm)!;
    const template = await host.template(128);
    // Another function's snapshot, with the files and modes the jailer gives a template (root:<VM group>, 0750/0660/0640).
    const otherDir = path.join(path.dirname(path.dirname(template.ramPath)), 'other-fn');
    fs.mkdirSync(otherDir, { mode: 0o750 });
    fs.writeFileSync(path.join(otherDir, 'ram'), 'secret module state', { mode: 0o660 });
    for (const f of [otherDir, path.join(otherDir, 'ram')]) fs.chownSync(f, 0, j.gid);
    const others = {
      otherVmDir: dirOf(b),
      otherVmSocket: path.join(dirOf(b), 'qmp.sock'),
      otherTemplateRam: path.join(otherDir, 'ram'),
      dataDir,
      secretsKey: path.join(dataDir, 'secrets.key'),
    };
    // Outside the jail the VM's own template and image are closed too (only its jail mounts them).
    const targets = { ...others, ownTemplateRam: template.ramPath, ownTemplateState: template.statePath, imageKernel: host.image.kernelPath };
    // On the host (outside the jail): plain file permissions must stop it.
    for (const [what, p] of Object.entries(targets)) {
      const r = asUid(j.uid, j.gid, `ls -d "${p}" >/dev/null && head -c 1 "${p}" >/dev/null 2>&1 || ls "${p}" >/dev/null`);
      expect(r.status, `${what} (${p}) readable by uid ${j.uid} on the host: ${r.stdout}${r.stderr}`).not.toBe(0);
    }
    // Inside the VM's own jail (what an escaped QEMU sees): the other paths do not even exist.
    const script = [
      ...Object.entries(others).map(([what, p]) => `if cat "${p}" >/dev/null 2>&1 || ls -A "${p}" 2>/dev/null | grep -q .; then echo "READ ${what}"; fi`),
      'ls /proc/self >/dev/null 2>&1 && echo "READ proc"',
      `head -c 4 "${a.vm.spec.kernelPath}" >/dev/null && head -c 4 "${template.statePath}" >/dev/null && echo own-files-ok`,
      'id -u',
    ].join('\n');
    const [cmd, ...args] = j.command('/bin/sh', ['-c', script]);
    const r = spawnSync(cmd!, args, { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['own-files-ok', String(j.uid)]);
    fs.rmSync(otherDir, { recursive: true, force: true });
  });

  it("kills a VM whose QEMU goes over its memory limit, reports it as the guest's, and its neighbour keeps answering", async () => {
    const c = await clone('hog', `export async function handler() { const a = []; for (let i = 0; i < 12; i++) a.push(Buffer.alloc(8 * 1024 * 1024, i + 1)); return a.length; }`);
    const cg = driver().jailOf(c.vm)!.cgroup!;
    const memDir = cg.dirs.memory!;
    const v1 = cg.layout.version === 'v1';
    // The configured limit has room for the whole guest RAM; to make QEMU itself go over, lower it to what it uses now + 24 MiB.
    const used = Number(fs.readFileSync(path.join(memDir, v1 ? 'memory.usage_in_bytes' : 'memory.current'), 'utf8'));
    fs.writeFileSync(path.join(memDir, v1 ? 'memory.limit_in_bytes' : 'memory.max'), String(used + 24 * MiB));
    // With swap on the host (zram, e.g. for idle reclaim) the RAM+swap limit is what kills: lower it too.
    const swapLimit = path.join(memDir, v1 ? 'memory.memsw.limit_in_bytes' : 'memory.swap.max');
    if (fs.existsSync(swapLimit)) fs.writeFileSync(swapLimit, v1 ? String(used + 24 * MiB) : '0');
    const err = await c.invoke({ callId: 'hog', event: event(''), timeoutMs: 60_000 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvocationError);
    expect((err as InvocationError).code).toBe('VM_MEMORY_LIMIT');
    expect((err as InvocationError).message).toMatch(/killed by the kernel for going over the VM's memory limit/);
    await c.vm.exited;
    expect(fs.existsSync(memDir)).toBe(false); // its cgroup is removed with it
    const ok = await b.invoke({ callId: 'b1', event: event('still'), timeoutMs: 30_000 });
    expect(ok).toMatchObject({ ok: true, value: 'b still' });
    const ok2 = await a.invoke({ callId: 'a1', event: event('here'), timeoutMs: 30_000 });
    expect(ok2).toMatchObject({ ok: true, value: 'a here' });
  });

  it('removes the cgroup and frees the uid when a VM is destroyed', async () => {
    const c = await clone('short');
    const j = driver().jailOf(c.vm)!;
    const dirs = Object.values(j.cgroup!.dirs);
    await c.destroy('test');
    for (let i = 0; i < 50 && dirs.some((d) => fs.existsSync(d!)); i++) await new Promise((r) => setTimeout(r, 20));
    for (const d of dirs) expect(fs.existsSync(d!), d).toBe(false);
    expect(fs.existsSync(`/run/mayfly-jailer/uids/${j.uid}`)).toBe(false);
  });
});
