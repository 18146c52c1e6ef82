/**
 * The jailer: each VM's QEMU runs as its own unprivileged uid, in its own
 * mount, network, IPC and UTS namespaces, chrooted into a root that holds only
 * its own files (jail-root.ts), with no capabilities and `no_new_privs`, inside
 * its own cgroup with memory, pids and CPU limits set before QEMU's first
 * instruction (cgroups.ts). Firecracker's jailer does the same for its VMM.
 *
 * QEMU is started through a short chain of util-linux/coreutils programs, each
 * exec'ing the next in the same process (so the worker's child is QEMU itself,
 * and `kill(pid)` still kills QEMU):
 *
 *   unshare --mount --net --ipc --uts   new namespaces (as root)
 *   sh -c '…'                           joins the VM's cgroups (echo $$ > cgroup.procs), `mount -a -T <fstab>`
 *   chroot <jail root>                  the skeleton root with the VM's bind mounts
 *   setpriv --reuid --regid --groups --no-new-privs --inh-caps=-all --bounding-set=-all --pdeathsig KILL
 *   qemu-system-x86_64 …
 *
 * Why one uid per VM rather than one `mayfly-vm` user: with a shared uid an
 * escaped QEMU could signal, ptrace or read /proc/<pid>/mem of every other VM's
 * QEMU, since they would be "its own" processes. Per-VM uids need no passwd
 * entries (numeric ids from a reserved range); all VMs share one group (the
 * range's first id), which is what makes template RAM readable to the VMs and
 * to nobody else; each VM's mount namespace holds only its own template.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MayflyConfig } from '../../../contracts/config.js';
import type { VmSpec } from '../types.js';
import { detectCgroups, prepareBases, removeBases, setGroupShares, sweepDeadBases, VmCgroup, type CgroupLayout, type VmLimits } from './cgroups.js';
import { UidPool } from './ids.js';
import { checkPath, JailRoot, type BindMount } from './jail-root.js';

const MiB = 1024 * 1024;

export interface JailerSettings {
  mode: 'auto' | 'on' | 'off';
  /** VM uids are uidBase+1 … uidBase+uidCount; uidBase itself is the VMs' group. */
  uidBase: number;
  uidCount: number;
  /** Added to the guest RAM for the cgroup memory limit: QEMU's own memory (measured). */
  memoryOverheadMiB: number;
  pidsMax: number;
  /** cpu.shares per vCPU (v2: mapped to cpu.weight). */
  cpuShares: number;
  /** CFS quota per vCPU, in % of one core; 0: no quota. */
  cpuQuotaPct: number;
  cpuPeriodUs: number;
  /** Put each VM in its own cpu cgroup (weights and quota); off by default, see MAYFLY_VM_CPU_LIMITS. */
  cpuLimits: boolean;
}

export function jailerSettings(config: MayflyConfig): JailerSettings {
  return {
    mode: config.MAYFLY_JAILER,
    uidBase: config.MAYFLY_JAILER_UID_BASE,
    uidCount: config.MAYFLY_JAILER_UID_COUNT,
    memoryOverheadMiB: config.MAYFLY_VM_MEMORY_OVERHEAD_MB,
    pidsMax: config.MAYFLY_VM_PIDS_MAX,
    cpuShares: config.MAYFLY_VM_CPU_SHARES,
    cpuQuotaPct: config.MAYFLY_VM_CPU_QUOTA_PCT,
    cpuPeriodUs: config.MAYFLY_VM_CPU_PERIOD_US,
    cpuLimits: config.MAYFLY_VM_CPU_LIMITS,
  };
}

/**
 * The cgroup limits of a VM of `spec` under `s`. Memory: guest RAM + QEMU's
 * own; a clone gets its guest RAM twice. Measured: a clone writing a page of
 * its template's tmpfs RAM file that the template never touched (a hole) is
 * charged twice, for its private copy and for the page the kernel first adds to
 * the shared file (shmem fills holes on a private write fault); a clone whose
 * function wrote 192 MiB of a 322 MiB guest was charged 430 MiB, its QEMU's own
 * memory being 95 MiB of it.
 */
export function vmLimits(s: JailerSettings, spec: Pick<VmSpec, 'memoryMiB' | 'vcpus' | 'memoryFile'>): VmLimits {
  const vcpus = spec.vcpus ?? 1;
  const guestCharge = spec.memoryFile && !spec.memoryFile.shared ? 2 * spec.memoryMiB : spec.memoryMiB;
  return {
    memoryBytes: (guestCharge + s.memoryOverheadMiB) * MiB,
    pidsMax: s.pidsMax,
    cpuShares: s.cpuShares * vcpus,
    cpuQuotaUs: s.cpuQuotaPct > 0 ? Math.round((s.cpuPeriodUs * s.cpuQuotaPct * vcpus) / 100) : null,
    cpuPeriodUs: s.cpuPeriodUs,
  };
}

/** How a jailed VM ended, as far as its jail can tell. */
export interface JailEnd {
  /** The kernel's OOM killer ended a process of the VM for its cgroup memory limit. */
  memoryLimitKill: boolean;
  memoryLimitMiB: number;
}

export interface JailedVm {
  readonly uid: number;
  readonly gid: number;
  readonly cgroup: VmCgroup | null;
  readonly limits: VmLimits;
  /** The command that starts `qemu args…` inside the jail: [program, ...arguments]. */
  command(qemu: string, args: string[]): string[];
  /** After QEMU has ended (synchronous: runs before anyone learns of the exit). Idempotent. */
  release(): JailEnd;
}

const WRAPPER = [
  'F=$1; R=$2; shift 2',
  'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift',
  'mount -a -T "$F" || exit 126',
  'exec chroot "$R" "$@"',
].join('\n');

export class Jailer {
  private readonly pending = new Set<Promise<void>>();
  /** Sum of the cpu shares of the VMs alive now (the parent cgroup's weight, see setGroupShares). */
  private liveShares = 0;

  private constructor(
    private readonly s: JailerSettings,
    private readonly root: JailRoot,
    private readonly uids: UidPool,
    private readonly cgroups: CgroupLayout | null,
    private readonly runDir: string,
    private readonly extraGroups: number[],
  ) {}

  get gid(): number {
    return this.s.uidBase;
  }

  get cgroupLayout(): CgroupLayout | null {
    return this.cgroups;
  }

  /**
   * The jailer for this process, or null (MAYFLY_JAILER=off, or auto when not
   * root). `why` says which, and what of the jail is missing (to be logged once).
   * MAYFLY_JAILER=on when not root is an error: the operator asked for it.
   */
  static open(s: JailerSettings, opts: { runDir: string; kvm: boolean; uid?: number }): { jailer: Jailer | null; why: string } {
    const uid = opts.uid ?? process.getuid?.() ?? -1;
    if (s.mode === 'off') return { jailer: null, why: 'jailer off (MAYFLY_JAILER=off): QEMU runs as the worker\'s user, no per-VM cgroups' };
    if (uid !== 0) {
      if (s.mode === 'on') {
        throw new Error('MAYFLY_JAILER=on needs the worker to run as root (it drops every VM to its own uid); run as root or set MAYFLY_JAILER=auto/off');
      }
      return { jailer: null, why: 'jailer skipped: the worker is not root (MAYFLY_JAILER=auto), so QEMU runs as the worker\'s user without per-VM uid, namespaces or cgroups' };
    }
    const root = JailRoot.create(path.join(checkPath(opts.runDir), 'jail-root'), opts.kvm);
    const uids = new UidPool(claimDir(), s.uidBase + 1, s.uidCount);
    uids.sweep();
    const found = detectCgroups();
    let layout: CgroupLayout | null = found.layout;
    if (layout && !s.cpuLimits) {
      const { cpu: _cpu, ...rest } = layout.bases;
      layout = Object.keys(rest).length > 0 ? { ...layout, bases: rest } : null;
    }
    let cgWhy = found.layout ? `cgroup ${found.layout.version} (${Object.keys(found.layout.bases).join(', ')})` : `no per-VM cgroups: ${found.why}`;
    if (layout) {
      try {
        sweepDeadBases(layout);
        prepareBases(layout);
      } catch (err) {
        cgWhy = `no per-VM cgroups: cannot prepare ${Object.values(layout.bases).join(', ')}: ${(err as Error).message}`;
        layout = null;
      }
    }
    const kvmGid = opts.kvm && fs.existsSync('/dev/kvm') ? fs.statSync('/dev/kvm').gid : null;
    const jailer = new Jailer(s, root, uids, layout, opts.runDir, kvmGid !== null && kvmGid !== 0 ? [kvmGid] : []);
    return {
      jailer,
      why: `jailer on: each QEMU as its own uid from ${s.uidBase + 1} (group ${s.uidBase}), no capabilities, no_new_privs, own mount/net/ipc/uts namespaces and chroot; ${cgWhy}`,
    };
  }

  /** Sets up the jail of one VM whose socket folder `dir` exists. Undo with the returned `release`. */
  prepare(spec: VmSpec, dir: string): JailedVm {
    const uid = this.uids.claim();
    const gid = this.gid;
    const limits = vmLimits(this.s, spec);
    let cgroup: VmCgroup | null = null;
    const fstabPath = path.join(this.runDir, `jail-${spec.id}.fstab`);
    try {
      fs.chownSync(dir, uid, gid);
      fs.chmodSync(dir, 0o700);
      const own: BindMount[] = [
        { source: spec.kernelPath, readOnly: true },
        { source: spec.initrdPath, readOnly: true },
        { source: dir, readOnly: false },
      ];
      this.root.mountPoint(spec.kernelPath, false);
      this.root.mountPoint(spec.initrdPath, false);
      this.root.mountPoint(dir, true);
      const template = spec.memoryFile ? path.dirname(spec.memoryFile.path) : null;
      if (template) {
        this.root.mountPoint(template, true);
        own.push({ source: template, readOnly: false });
        if (spec.memoryFile!.shared) openTemplate(template, gid);
        else lockTemplate(spec.memoryFile!.path, gid, true);
      }
      fs.writeFileSync(fstabPath, this.root.fstab(own), { mode: 0o600 });
      if (this.cgroups) {
        cgroup = new VmCgroup(this.cgroups, `vm-${spec.id}`);
        cgroup.create(limits);
        this.weigh(limits.cpuShares);
      }
    } catch (err) {
      fs.rmSync(fstabPath, { force: true });
      if (cgroup && cgroup.tryRemove()) this.weigh(-limits.cpuShares);
      this.uids.release(uid);
      throw err;
    }
    const groups = [gid, ...this.extraGroups].join(',');
    let ended: JailEnd | null = null;
    return {
      uid,
      gid,
      cgroup,
      limits,
      command: (qemu, args) => [
        'unshare', '--mount', '--propagation', 'private', '--net', '--ipc', '--uts', '--',
        'sh', '-c', WRAPPER, 'mayfly-jail', fstabPath, this.root.root, ...(cgroup?.procsFiles() ?? []), '--',
        'setpriv', `--reuid=${uid}`, `--regid=${gid}`, `--groups=${groups}`, '--no-new-privs',
        '--inh-caps=-all', '--bounding-set=-all', '--pdeathsig', 'KILL', '--',
        qemu, ...args,
      ],
      release: () => {
        if (ended) return ended;
        ended = { memoryLimitKill: (cgroup?.oomKills() ?? 0) > 0, memoryLimitMiB: Math.round(limits.memoryBytes / MiB) };
        fs.rmSync(fstabPath, { force: true });
        this.root.removeMountPoint(dir);
        if (spec.memoryFile?.shared) lockTemplate(spec.memoryFile.path, gid);
        this.finish(cgroup, uid, limits.cpuShares);
        return ended;
      },
    };
  }

  /** Removes the VM's cgroup (retrying while its last processes are reaped), then frees its uid. */
  private finish(cgroup: VmCgroup | null, uid: number, shares: number): void {
    if (cgroup) this.weigh(-shares);
    if (!cgroup || cgroup.tryRemove()) {
      this.uids.release(uid);
      return;
    }
    const p = (async () => {
      for (let i = 0; i < 100; i++) {
        await new Promise((r) => setTimeout(r, 20));
        if (cgroup.tryRemove()) break;
      }
      // Even if the folder stays (a process the kernel cannot reap), the uid is not handed out again.
      if (cgroup.pids().length === 0) this.uids.release(uid);
    })();
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private weigh(delta: number): void {
    this.liveShares += delta;
    try {
      setGroupShares(this.cgroups!, Math.max(this.s.cpuShares, this.liveShares));
    } catch {
      // the parent's weight is an optimisation of fairness, not a limit: keep going
    }
  }

  /** After every VM is gone: waits for cgroup removals, removes the jail root and the cgroup bases. */
  async close(): Promise<void> {
    await Promise.all([...this.pending]);
    this.root.remove();
    if (this.cgroups) removeBases(this.cgroups);
  }
}

/** Where uid claims live: host-wide (several workers per host), root only. */
function claimDir(): string {
  return path.join(fs.existsSync('/run') ? '/run' : os.tmpdir(), 'mayfly-jailer', 'uids');
}

/** A template being made: its QEMU (group `gid`) creates the RAM and state files in the folder. */
function openTemplate(dir: string, gid: number): void {
  fs.chownSync(dir, 0, gid);
  fs.chmodSync(dir, 0o770);
}

/**
 * A template in use by clones: root owns everything, the VMs' group may read
 * the state and open the RAM file. Read-write, because QEMU 7.2 opens a
 * memory-backend-file O_RDWR even for the private copy-on-write mapping of a
 * clone (readonly=on would make guest RAM read-only; `rom=off` arrives in 8.2).
 */
function lockTemplate(ramPath: string, gid: number, onlyIfOpen = false): void {
  const dir = path.dirname(ramPath);
  try {
    if (onlyIfOpen) {
      const st = fs.statSync(dir);
      if (st.uid === 0 && st.gid === gid && (st.mode & 0o777) === 0o750) return;
    }
    for (const name of fs.readdirSync(dir)) {
      const f = path.join(dir, name);
      if (!fs.lstatSync(f).isFile()) continue;
      fs.chownSync(f, 0, gid);
      fs.chmodSync(f, f === ramPath ? 0o660 : 0o640);
    }
    fs.chownSync(dir, 0, gid);
    fs.chmodSync(dir, 0o750);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
