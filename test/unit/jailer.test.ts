/**
 * The jailer's pure parts and its file writes, without root or QEMU: cgroup
 * detection from mountinfo (v1 as on this machine, v2 as on current hosts),
 * the limit files of both versions written into a temporary folder (the v2
 * path cannot run on this machine: its controllers are bound to v1), OOM
 * counters, the bind-mount table, and the host-wide uid claims.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import {
  detectCgroups,
  limitWrites,
  parseOomKills,
  prepareBases,
  sharesToWeight,
  sweepDeadBases,
  VmCgroup,
  type CgroupLayout,
} from '../../worker/driver/jailer/cgroups.js';
import { UidPool } from '../../worker/driver/jailer/ids.js';
import { checkPath, fstabLine } from '../../worker/driver/jailer/jail-root.js';
import { Jailer, vmLimits, type JailerSettings } from '../../worker/driver/jailer/index.js';
import { platformCode } from '../../worker/service.js';

const tmp: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'mfj-'));
  tmp.push(d);
  return d;
}
afterEach(() => {
  for (const d of tmp.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const settings: JailerSettings = {
  mode: 'auto',
  uidBase: 900_000_000,
  uidCount: 100,
  memoryOverheadMiB: 100,
  pidsMax: 64,
  cpuShares: 1024,
  cpuQuotaPct: 50,
  cpuPeriodUs: 100_000,
  cpuLimits: true,
};

const V1_MOUNTINFO = `25 1 0:23 / / rw - overlay overlay rw
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 25 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 25 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const V1_CGROUP = `8:pids:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
`;

describe('cgroup detection', () => {
  it('finds the v1 hierarchies under this process’s own cgroup of each', () => {
    const files: Record<string, string> = { '/proc/self/mountinfo': V1_MOUNTINFO, '/proc/self/cgroup': V1_CGROUP };
    const r = detectCgroups(42, (p) => files[p]!);
    expect(r.layout).toEqual({
      version: 'v1',
      bases: {
        cpu: '/sys/fs/cgroup/cpu/mayfly-42',
        memory: '/sys/fs/cgroup/memory/process_api/abc/mayfly-42',
        pids: '/sys/fs/cgroup/pids/mayfly-42',
      },
    });
  });

  it('uses the unified hierarchy when it offers the controllers (a mount root below / is handled)', () => {
    const files: Record<string, string> = {
      '/proc/self/mountinfo': '40 25 0:35 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n',
      '/proc/self/cgroup': '0::/user.slice/mayfly.service\n',
      '/sys/fs/cgroup/mayfly.service/cgroup.controllers': 'cpuset cpu io memory pids\n',
    };
    const r = detectCgroups(7, (p) => {
      if (!(p in files)) throw new Error(`ENOENT ${p}`);
      return files[p]!;
    });
    const base = '/sys/fs/cgroup/mayfly.service/mayfly-vms';
    expect(r.layout).toEqual({ version: 'v2', bases: { memory: base, cpu: base, pids: base } });
  });

  it('says why when no hierarchy offers a controller', () => {
    const files: Record<string, string> = {
      '/proc/self/mountinfo': '37 25 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n',
      '/proc/self/cgroup': '0::/\n',
      '/sys/fs/cgroup/unified/cgroup.controllers': '\n',
    };
    const r = detectCgroups(7, (p) => files[p] ?? '');
    expect(r.layout).toBeNull();
    expect((r as { why: string }).why).toMatch(/offers none of memory, cpu, pids/);
  });

  it('finds the real hierarchies of this machine', () => {
    const r = detectCgroups();
    // Whatever the machine has, the answer is a layout or a reason, never an exception.
    expect(r.layout !== null || (r as { why: string }).why.length > 0).toBe(true);
  });
});

describe('cgroup limit files', () => {
  const limits = vmLimits(settings, { memoryMiB: 256, vcpus: 1 });

  it('derives the limits from the guest RAM and the settings', () => {
    expect(limits).toEqual({ memoryBytes: 356 * 1024 * 1024, pidsMax: 64, cpuShares: 1024, cpuQuotaUs: 50_000, cpuPeriodUs: 100_000 });
    expect(vmLimits({ ...settings, cpuQuotaPct: 0 }, { memoryMiB: 256, vcpus: 2 })).toMatchObject({ cpuShares: 2048, cpuQuotaUs: null });
    // A template's RAM is its file (charged once); a clone may be charged for its copy and for the file's holes it fills.
    expect(vmLimits(settings, { memoryMiB: 256, memoryFile: { path: '/t/ram', shared: true } }).memoryBytes).toBe(356 * 1024 * 1024);
    expect(vmLimits(settings, { memoryMiB: 256, memoryFile: { path: '/t/ram', shared: false } }).memoryBytes).toBe(612 * 1024 * 1024);
  });

  it('maps cpu.shares to cpu.weight as runc does', () => {
    expect(sharesToWeight(2)).toBe(1);
    expect(sharesToWeight(1024)).toBe(40);
    expect(sharesToWeight(262_144)).toBe(10_000);
  });

  it('writes the v2 files of a VM (memory.max, memory.oom.group, pids.max, cpu.weight, cpu.max) and reads its OOM kills', () => {
    const base = tempDir();
    const layout: CgroupLayout = { version: 'v2', bases: { memory: base, cpu: base, pids: base } };
    const cg = new VmCgroup(layout, 'vm-a');
    cg.create(limits);
    const dir = path.join(base, 'vm-a');
    const read = (f: string) => fs.readFileSync(path.join(dir, f), 'utf8');
    expect(read('memory.max')).toBe(String(356 * 1024 * 1024));
    expect(read('memory.oom.group')).toBe('1');
    expect(read('pids.max')).toBe('64');
    expect(read('cpu.weight')).toBe('40');
    expect(read('cpu.max')).toBe('50000 100000');
    expect(cg.procsFiles()).toEqual([path.join(dir, 'cgroup.procs')]);
    expect(cg.oomKills()).toBe(0);
    fs.writeFileSync(path.join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n');
    expect(cg.oomKills()).toBe(1);
    new VmCgroup(layout, 'vm-b').create({ ...limits, cpuQuotaUs: null });
    expect(fs.readFileSync(path.join(base, 'vm-b', 'cpu.max'), 'utf8')).toBe('max 100000');
  });

  it('v2: the worker moves itself into a leaf before turning controllers on for the VMs', () => {
    const own = tempDir();
    fs.writeFileSync(path.join(own, 'cgroup.subtree_control'), '');
    const base = path.join(own, 'mayfly-vms');
    prepareBases({ version: 'v2', bases: { memory: base, cpu: base, pids: base } }, 4242);
    expect(fs.readFileSync(path.join(own, 'worker', 'cgroup.procs'), 'utf8')).toBe('4242');
    expect(fs.readFileSync(path.join(own, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
    expect(fs.readFileSync(path.join(base, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu +pids');
  });

  it('writes the v1 files into each hierarchy’s folder', () => {
    const [m, c, p] = [tempDir(), tempDir(), tempDir()];
    const cg = new VmCgroup({ version: 'v1', bases: { memory: m, cpu: c, pids: p } }, 'vm-a');
    cg.create(limits);
    expect(fs.readFileSync(path.join(m, 'vm-a', 'memory.limit_in_bytes'), 'utf8')).toBe(String(356 * 1024 * 1024));
    expect(fs.readFileSync(path.join(p, 'vm-a', 'pids.max'), 'utf8')).toBe('64');
    expect(fs.readFileSync(path.join(c, 'vm-a', 'cpu.shares'), 'utf8')).toBe('1024');
    expect(fs.readFileSync(path.join(c, 'vm-a', 'cpu.cfs_quota_us'), 'utf8')).toBe('50000');
    expect(cg.procsFiles()).toHaveLength(3);
    expect(limitWrites('v1', { ...limits, cpuQuotaUs: null }).find((w) => w.file === 'cpu.cfs_quota_us')?.value).toBe('-1');
  });

  it('v1: sweeps the empty cgroups of workers that are gone, not those of live ones', () => {
    const parent = tempDir();
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    const deadBase = path.join(parent, `mayfly-${dead.stdout.trim()}`);
    fs.mkdirSync(path.join(deadBase, 'vm-a'), { recursive: true });
    fs.mkdirSync(path.join(parent, `mayfly-${process.pid}`));
    fs.mkdirSync(path.join(parent, `mayfly-${process.ppid}`));
    expect(sweepDeadBases({ version: 'v1', bases: { memory: path.join(parent, `mayfly-${process.pid}`) } })).toBe(1);
    expect(fs.readdirSync(parent).sort()).toEqual([`mayfly-${process.pid}`, `mayfly-${process.ppid}`].sort());
  });

  it('parses the oom_kill counter of v1 memory.oom_control', () => {
    expect(parseOomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n')).toBe(3);
    expect(parseOomKills('oom_kill_disable 0\n')).toBe(0);
  });
});

describe('jail mounts', () => {
  it('binds each path at the same path inside the jail root, read-only unless asked', () => {
    expect(fstabLine('/j', { source: '/a/vmlinux', readOnly: true })).toBe('/a/vmlinux /j/a/vmlinux none bind,nosuid,nodev,ro 0 0');
    expect(fstabLine('/j', { source: '/tmp/x/vm1', readOnly: false })).toBe('/tmp/x/vm1 /j/tmp/x/vm1 none bind,nosuid,nodev 0 0');
  });

  it('refuses paths that could break the fstab or the command line', () => {
    for (const bad of ['relative/path', '/a b', '/a/../etc', '/a\nb', '/a\\040b']) expect(() => checkPath(bad), bad).toThrow(/cannot be bind-mounted/);
  });
});

describe('VM uids', () => {
  it('claims distinct uids host-wide, round-robin, and frees them', () => {
    const dir = tempDir();
    const a = new UidPool(dir, 1000, 3, process.pid);
    const b = new UidPool(dir, 1000, 3, process.pid);
    const got = [a.claim(), b.claim(), a.claim()];
    expect(new Set(got).size).toBe(3);
    expect(() => b.claim()).toThrow(/all 3 VM uids from 1000 are in use/);
    a.release(got[1]!);
    expect(b.claim()).toBe(got[1]);
  });

  it('sweeps the claims of workers that are gone', () => {
    const dir = tempDir();
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    const deadPid = Number(dead.stdout.trim());
    fs.writeFileSync(path.join(dir, '1001'), String(deadPid));
    fs.writeFileSync(path.join(dir, '1002'), String(process.pid));
    expect(new UidPool(dir, 1000, 3, 1).sweep()).toBe(1);
    expect(fs.readdirSync(dir)).toEqual(['1002']);
  });
});

describe('jailer switch', () => {
  it('is off on request, skipped under auto without root, and an error under on without root', () => {
    expect(Jailer.open({ ...settings, mode: 'off' }, { runDir: '/tmp/x', kvm: false }).jailer).toBeNull();
    const auto = Jailer.open(settings, { runDir: '/tmp/x', kvm: false, uid: 1000 });
    expect(auto.jailer).toBeNull();
    expect(auto.why).toMatch(/not root/);
    expect(() => Jailer.open({ ...settings, mode: 'on' }, { runDir: '/tmp/x', kvm: false, uid: 1000 })).toThrow(/MAYFLY_JAILER=on needs the worker to run as root/);
  });

  it('a QEMU killed for its memory limit is the guest’s fault (502), not the platform’s', () => {
    expect(platformCode('VM_MEMORY_LIMIT')).toBe('GUEST_FAULT');
    expect(platformCode('VM_CRASHED')).toBe('VM_FAILED');
  });
});
