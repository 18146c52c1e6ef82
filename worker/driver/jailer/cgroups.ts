/**
 * Per-VM cgroups: memory, pids and CPU limits set before QEMU starts, and the
 * OOM-kill count read when it ends. Both layouts are handled:
 *
 * - cgroup v1 (separate `memory`, `cpu`, `pids` hierarchies, what this machine
 *   has): one folder per VM in each hierarchy, under `<own cgroup>/mayfly-<pid>`.
 * - cgroup v2 (the unified hierarchy of current hosts): one folder per VM under
 *   `<own cgroup>/mayfly-vms`; the worker moves itself into `<own cgroup>/worker`
 *   first, because v2 enables controllers for children only in a cgroup without
 *   processes of its own ("no internal processes").
 *
 * The layout is detected from /proc/self/mountinfo and /proc/self/cgroup.
 */
import fs from 'node:fs';
import path from 'node:path';

export type CgroupVersion = 'v1' | 'v2';
export type Controller = 'memory' | 'cpu' | 'pids';
const CONTROLLERS: Controller[] = ['memory', 'cpu', 'pids'];

export interface VmLimits {
  memoryBytes: number;
  pidsMax: number;
  /** Relative CPU weight in cgroup v1 units (cpu.shares, 1024 = default). */
  cpuShares: number;
  /** CFS quota per period in µs; null: no quota. */
  cpuQuotaUs: number | null;
  cpuPeriodUs: number;
}

/** Where the per-VM cgroups go: one base folder per hierarchy (v1) or one (v2). */
export interface CgroupLayout {
  version: CgroupVersion;
  /** v1: base folder per controller (co-mounted controllers share one); v2: the same folder for all three. */
  bases: Partial<Record<Controller, string>>;
}

/** cgroup v2's cpu.weight (1..10000) for a v1 cpu.shares value (2..262144), as runc and systemd map it. */
export function sharesToWeight(shares: number): number {
  return Math.min(10_000, Math.max(1, Math.round(1 + ((shares - 2) * 9999) / 262_142)));
}

/** The files to write into a VM's cgroup folder(s), in order, for these limits. */
export function limitWrites(version: CgroupVersion, l: VmLimits): Array<{ controller: Controller; file: string; value: string; optional?: boolean }> {
  if (version === 'v1') {
    return [
      { controller: 'memory', file: 'memory.limit_in_bytes', value: String(l.memoryBytes) },
      // RAM + swap: with swap on the host (zram for idle reclaim) the limit would otherwise only
      // push the VM into swap, never kill it. Absent when the kernel does no swap accounting.
      { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: String(l.memoryBytes), optional: true },
      { controller: 'pids', file: 'pids.max', value: String(l.pidsMax) },
      { controller: 'cpu', file: 'cpu.shares', value: String(l.cpuShares) },
      { controller: 'cpu', file: 'cpu.cfs_period_us', value: String(l.cpuPeriodUs) },
      { controller: 'cpu', file: 'cpu.cfs_quota_us', value: l.cpuQuotaUs === null ? '-1' : String(l.cpuQuotaUs) },
    ];
  }
  return [
    { controller: 'memory', file: 'memory.max', value: String(l.memoryBytes) },
    // v2 counts swap apart: a VM may page out as much as its limit (idle reclaim), no more.
    { controller: 'memory', file: 'memory.swap.max', value: String(l.memoryBytes), optional: true },
    // Without this the kernel kills one thread of QEMU, not QEMU: the whole VM goes at once.
    { controller: 'memory', file: 'memory.oom.group', value: '1' },
    { controller: 'pids', file: 'pids.max', value: String(l.pidsMax) },
    { controller: 'cpu', file: 'cpu.weight', value: String(sharesToWeight(l.cpuShares)) },
    { controller: 'cpu', file: 'cpu.max', value: `${l.cpuQuotaUs === null ? 'max' : l.cpuQuotaUs} ${l.cpuPeriodUs}` },
  ];
}

/** The `oom_kill` counter of a v1 memory.oom_control or v2 memory.events file (0 when absent). */
export function parseOomKills(text: string): number {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

interface Mount {
  root: string;
  point: string;
  type: string;
  options: string[];
}

export function parseMountinfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const [type, , superOpts] = line.slice(sep + 3).split(' ');
    if (!type || left.length < 5) continue;
    const unescape = (s: string) => s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ root: unescape(left[3]!), point: unescape(left[4]!), type, options: (superOpts ?? '').split(',') });
  }
  return out;
}

/** /proc/self/cgroup: hierarchy key ("memory", "cpu,cpuacct", "" for v2) → path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

/** A cgroup's folder: its mount point plus its path below the mount's root. */
function folderOf(mount: Mount, cgPath: string): string {
  const rel = mount.root !== '/' && (cgPath === mount.root || cgPath.startsWith(`${mount.root}/`)) ? cgPath.slice(mount.root.length) : cgPath;
  return path.join(mount.point, rel);
}

/**
 * Finds where this process may make per-VM cgroups: v1 when any of memory, cpu,
 * pids is mounted as a v1 hierarchy, else the unified hierarchy when it offers
 * them. Returns null with the reason when neither works.
 */
export function detectCgroups(
  pid: number = process.pid,
  read: (p: string) => string = (p) => fs.readFileSync(p, 'utf8'),
): { layout: CgroupLayout } | { layout: null; why: string } {
  let mounts: Mount[];
  let own: Map<string, string>;
  try {
    mounts = parseMountinfo(read('/proc/self/mountinfo'));
    own = parseProcCgroup(read('/proc/self/cgroup'));
  } catch (err) {
    return { layout: null, why: `cannot read /proc/self/mountinfo or /proc/self/cgroup: ${(err as Error).message}` };
  }
  const v1: Partial<Record<Controller, string>> = {};
  for (const m of mounts.filter((x) => x.type === 'cgroup')) {
    for (const c of CONTROLLERS) {
      if (!m.options.includes(c) || v1[c]) continue;
      const key = [...own.keys()].find((k) => k.split(',').includes(c));
      v1[c] = path.join(folderOf(m, key !== undefined ? own.get(key)! : '/'), `mayfly-${pid}`);
    }
  }
  if (Object.keys(v1).length > 0) return { layout: { version: 'v1', bases: v1 } };
  const u = mounts.find((x) => x.type === 'cgroup2');
  if (!u) return { layout: null, why: 'no cgroup hierarchy with the memory, cpu or pids controller is mounted' };
  const ownDir = folderOf(u, own.get('') ?? '/');
  let available: string[] = [];
  try {
    available = read(path.join(ownDir, 'cgroup.controllers')).trim().split(/\s+/);
  } catch {
    // not readable: no controllers
  }
  const usable = CONTROLLERS.filter((c) => available.includes(c));
  if (usable.length === 0) {
    return { layout: null, why: `the unified cgroup hierarchy (${u.point}) offers none of memory, cpu, pids to this process's cgroup` };
  }
  const base = path.join(ownDir, 'mayfly-vms');
  return { layout: { version: 'v2', bases: Object.fromEntries(usable.map((c) => [c, base])) } };
}

/**
 * Makes the base folder(s) of a layout ready for per-VM children. v2: moves
 * this process into a leaf `worker` of its own cgroup and turns the
 * controllers on for the subtree (see the file comment). Throws with the reason.
 */
export function prepareBases(layout: CgroupLayout, pid: number = process.pid): void {
  const dirs = new Set(Object.values(layout.bases));
  if (layout.version === 'v2') {
    const base = [...dirs][0]!;
    const ownDir = path.dirname(base);
    const ctl = Object.keys(layout.bases).map((c) => `+${c}`).join(' ');
    const enabled = fs.readFileSync(path.join(ownDir, 'cgroup.subtree_control'), 'utf8');
    if (!Object.keys(layout.bases).every((c) => enabled.split(/\s+/).includes(c))) {
      const leaf = path.join(ownDir, 'worker');
      fs.mkdirSync(leaf, { recursive: true });
      fs.writeFileSync(path.join(leaf, 'cgroup.procs'), String(pid));
      fs.writeFileSync(path.join(ownDir, 'cgroup.subtree_control'), ctl);
    }
    fs.mkdirSync(base, { recursive: true });
    fs.writeFileSync(path.join(base, 'cgroup.subtree_control'), ctl);
    return;
  }
  for (const d of dirs) fs.mkdirSync(d, { recursive: true });
}

/**
 * Weighs the VMs' common parent cgroup as the sum of its VMs' own weights, so
 * that each VM competes with the host's other processes like one process would
 * (a parent left at the default weight would give all VMs together the CPU of
 * one process: with 20 busy processes on the host, the VMs would share 1/21 of it).
 */
export function setGroupShares(layout: CgroupLayout, shares: number): void {
  const dir = layout.bases.cpu;
  if (!dir) return;
  const clamped = Math.min(262_144, Math.max(2, shares));
  if (layout.version === 'v1') fs.writeFileSync(path.join(dir, 'cpu.shares'), String(clamped));
  else fs.writeFileSync(path.join(dir, 'cpu.weight'), String(sharesToWeight(clamped)));
}

/**
 * v1: removes the `mayfly-<pid>` bases (and their empty VM folders) of workers
 * that are gone: a worker killed with SIGKILL could not remove them (its QEMUs
 * died with it, so the folders are empty). Returns how many were removed.
 */
export function sweepDeadBases(layout: CgroupLayout): number {
  if (layout.version !== 'v1') return 0;
  let removed = 0;
  for (const base of new Set(Object.values(layout.bases))) {
    const parent = path.dirname(base);
    for (const name of fs.readdirSync(parent)) {
      const m = /^mayfly-(\d+)$/.exec(name);
      if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
      const dir = path.join(parent, name);
      try {
        for (const vm of fs.readdirSync(dir, { withFileTypes: true })) if (vm.isDirectory()) fs.rmdirSync(path.join(dir, vm.name));
        fs.rmdirSync(dir);
        removed++;
      } catch {
        // a process is still in it, or another worker swept it first
      }
    }
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the base folders (the per-VM folders must be gone). Errors are ignored: best effort at shutdown. */
export function removeBases(layout: CgroupLayout): void {
  for (const d of new Set(Object.values(layout.bases))) {
    try {
      fs.rmdirSync(d);
    } catch {
      // busy or gone
    }
  }
}

/** One VM's cgroup folder(s): made and limited before QEMU starts, emptied and removed after. */
export class VmCgroup {
  /** Folder per controller; co-mounted controllers (and v2) share one. */
  readonly dirs: Partial<Record<Controller, string>>;

  constructor(
    readonly layout: CgroupLayout,
    readonly name: string,
  ) {
    this.dirs = Object.fromEntries(Object.entries(layout.bases).map(([c, b]) => [c, path.join(b, name)]));
  }

  private unique(): string[] {
    return [...new Set(Object.values(this.dirs))];
  }

  /** Makes the folders and writes the limits (only for the controllers the layout has). */
  create(limits: VmLimits): void {
    for (const d of this.unique()) fs.mkdirSync(d);
    for (const w of limitWrites(this.layout.version, limits)) {
      const dir = this.dirs[w.controller];
      if (!dir) continue;
      if (w.optional && !fs.existsSync(path.join(dir, w.file))) continue;
      fs.writeFileSync(path.join(dir, w.file), w.value);
    }
  }

  /** The `cgroup.procs` files a process writes its PID into to join every hierarchy of this VM. */
  procsFiles(): string[] {
    return this.unique().map((d) => path.join(d, 'cgroup.procs'));
  }

  /** How often the kernel's OOM killer killed a process of this cgroup for its memory limit. */
  oomKills(): number {
    const dir = this.dirs.memory;
    if (!dir) return 0;
    try {
      return parseOomKills(fs.readFileSync(path.join(dir, this.layout.version === 'v1' ? 'memory.oom_control' : 'memory.events'), 'utf8'));
    } catch {
      return 0;
    }
  }

  /** Highest memory use recorded (v1 memory.max_usage_in_bytes, v2 memory.peak), or null. */
  peakMemoryBytes(): number | null {
    const dir = this.dirs.memory;
    if (!dir) return null;
    try {
      return Number(fs.readFileSync(path.join(dir, this.layout.version === 'v1' ? 'memory.max_usage_in_bytes' : 'memory.peak'), 'utf8').trim());
    } catch {
      return null;
    }
  }

  /** PIDs still in the cgroup (e.g. the `cat` of a migration whose QEMU died). */
  pids(): number[] {
    const out = new Set<number>();
    for (const f of this.procsFiles()) {
      try {
        for (const l of fs.readFileSync(f, 'utf8').split('\n')) if (/^\d+$/.test(l)) out.add(Number(l));
      } catch {
        // gone
      }
    }
    return [...out];
  }

  /**
   * Kills what is left in the cgroup (by PID, these are the VM's own processes)
   * and removes the folders. Returns true when they are gone; a process that has
   * not been reaped yet keeps a folder busy, so the caller retries.
   */
  tryRemove(): boolean {
    for (const pid of this.pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    let all = true;
    for (const d of this.unique()) {
      try {
        fs.rmdirSync(d);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') all = false;
      }
    }
    return all;
  }
}
