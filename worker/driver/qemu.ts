/**
 * QEMU driver: one `qemu-system-x86_64 -M microvm` process per VM, direct
 * kernel boot (uncompressed vmlinux, PVH entry), guest channel on a
 * virtio-console whose chardev is a unix socket, control over QMP.
 *
 * `create` starts QEMU with `-S` (no guest instruction runs), connects QMP and
 * the channel: that is the prepare phase of LightVM's split toolstack. `start`
 * is a QMP `cont`. The guest has no network device (`-nodefaults`, no -nic).
 * `destroy` SIGKILLs the process (there is no disk state to flush), waits for
 * it to be reaped, and removes the VM's folder with its sockets.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpClient } from './qmp.js';
import { DriverError, type HypervisorDriver, type Vm, type VmExit, type VmSpec, type VmState } from './types.js';
import { GUEST_KERNEL_ARGS } from './guest-kernel-args.js';
import { pageOut, pageOutHelper } from './page-out.js';
import type { JailedVm, Jailer } from './jailer/index.js';

export type Accel = 'kvm' | 'tcg';

export interface QemuDriverOptions {
  accel: Accel;
  /** Folder for per-VM sockets; unix socket paths must stay under 108 bytes. */
  runDir: string;
  qemuBinary?: string;
  /** Write the guest kernel's console to <vm dir>/console.log (debugging; off by default). */
  consoleLog?: boolean;
  /** How long QEMU may take to come up with its sockets. */
  startTimeoutMs?: number;
  /**
   * TCG translation-buffer size in MiB (`-accel tcg,tb-size=`); 0 keeps QEMU's
   * default (1 GiB reserved). The touched part of this buffer is most of a
   * paused clone's private memory, so it caps per-VM footprint (issue 19).
   */
  tbSizeMiB?: number;
  /** Where the page-out helper is compiled (`reclaim`); unset: `reclaim` is not offered. */
  cacheDir?: string;
  /** Cage every QEMU (own uid, namespaces, chroot, cgroup): ./jailer/. Absent: QEMU runs as the worker's user. */
  jailer?: Jailer | null;
}

/** Kernel arguments measured to boot fast on microvm (../shared/notes/qemu-on-this-machine.md). */
const BASE_KERNEL_ARGS = [
  'quiet',
  ...GUEST_KERNEL_ARGS,
  'i8042.noaux',
  'i8042.nomux',
  'i8042.nopnp',
  'i8042.dumbkbd',
  '8250.nr_uarts=1',
  'pci=off',
  'initcall_blacklist=init_kprobe_trace,cubictcp_register,crypto_kdf108_init,load_system_certificate_list,init_ima,init_encrypted,cmos_init,audit_fsnotify_init,snapshot_device_init,hugetlb_init',
];

/** Under TCG the guest cannot calibrate the TSC on microvm and hangs: give it the host's rate. */
export function hostTscKhz(): number | null {
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? Math.round(Number(m[1]) * 1000) : null;
  } catch {
    return null;
  }
}

const STDERR_TAIL = 4096;

class QemuVm implements Vm {
  state: VmState = 'prepared';
  readonly exited: Promise<VmExit>;
  destroying: Promise<void> | null = null;
  destroyReason: string | null = null;
  stderrTail = '';
  qmp: QmpClient | null = null;
  channel!: net.Socket;
  private resolveExit!: (e: VmExit) => void;

  constructor(
    readonly spec: VmSpec,
    readonly dir: string,
    readonly proc: ChildProcess,
    private readonly onGone: (vm: QemuVm) => void,
    readonly jail: JailedVm | null = null,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (d: string) => {
      this.stderrTail = (this.stderrTail + d).slice(-STDERR_TAIL);
    });
    proc.once('exit', (code, signal) => this.gone(signal ? `signal ${signal}` : `exit code ${code}`));
    // A QEMU that could not be spawned at all has no exit event.
    proc.once('error', (err) => {
      if (proc.pid === undefined) this.gone(`spawn failed: ${err.message}`);
    });
  }

  private gone(how: string): void {
    if (this.state === 'exited') return;
    this.state = 'exited';
    this.qmp?.close();
    this.channel?.destroy();
    // Clean up before anyone learns of the exit: once `exited` settles, nothing of the VM is left.
    fs.rmSync(this.dir, { recursive: true, force: true });
    const jailEnd = this.jail?.release();
    this.onGone(this);
    this.resolveExit(
      this.destroyReason !== null
        ? { reason: 'destroyed', detail: this.destroyReason }
        : jailEnd?.memoryLimitKill
          ? {
              reason: 'crashed',
              cause: 'memory-limit',
              detail: `QEMU was killed by the kernel for going over the VM's memory limit (${jailEnd.memoryLimitMiB} MiB: guest RAM + QEMU's own)`,
            }
          : { reason: 'crashed', detail: `QEMU ended by itself (${how})${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}` },
    );
  }

  get id(): string {
    return this.spec.id;
  }
}

export class QemuDriver implements HypervisorDriver {
  readonly name = 'qemu';
  private readonly vms = new Map<string, QemuVm>();
  private readonly qemu: string;
  private readonly tscKhz = hostTscKhz();

  constructor(private readonly opts: QemuDriverOptions) {
    this.qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
  }

  get accel(): Accel {
    return this.opts.accel;
  }

  kernelCommandLine(spec: VmSpec): string {
    const args = [...BASE_KERNEL_ARGS];
    if (this.opts.consoleLog) args.unshift('console=ttyS0');
    if (this.opts.accel === 'tcg' && this.tscKhz) args.push(`tsc_early_khz=${this.tscKhz}`, 'tsc=reliable');
    return [...args, ...(spec.kernelArgs ?? [])].join(' ');
  }

  async create(spec: VmSpec): Promise<Vm> {
    if (!/^[A-Za-z0-9_-]{1,48}$/.test(spec.id)) throw new DriverError('VM_START_FAILED', `invalid VM id "${spec.id}"`);
    if (this.vms.has(spec.id)) throw new DriverError('VM_START_FAILED', `VM id "${spec.id}" is already in use`);
    const dir = path.join(this.opts.runDir, spec.id);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const qmpPath = path.join(dir, 'qmp.sock');
    const chPath = path.join(dir, 'ch.sock');
    const args = [
      '-name', `mayfly-${spec.id}`,
      '-M', ['microvm', ...(spec.memoryFile ? ['memory-backend=mem'] : []), ...(spec.machineOptions ?? [])].join(','),
      ...(spec.memoryFile
        ? ['-object', `memory-backend-file,id=mem,size=${spec.memoryMiB}M,mem-path=${spec.memoryFile.path},share=${spec.memoryFile.shared ? 'on' : 'off'}`]
        : []),
      ...(spec.incoming ? ['-incoming', 'defer'] : []),
      '-accel', this.opts.accel === 'tcg' && this.opts.tbSizeMiB ? `tcg,tb-size=${this.opts.tbSizeMiB}` : this.opts.accel,
      '-cpu', this.opts.accel === 'kvm' ? 'host' : 'max',
      '-m', String(spec.memoryMiB),
      '-smp', String(spec.vcpus ?? 1),
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      // seccomp: no obsolete syscalls, no setuid/privilege changes, no scheduler/affinity changes.
      // `spawn` stays allowed: template snapshots and clones migrate through `exec:cat`.
      '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny',
      '-S',
      '-kernel', spec.kernelPath,
      '-initrd', spec.initrdPath,
      '-append', this.kernelCommandLine(spec),
      '-chardev', `socket,id=ch0,path=${chPath},server=on,wait=off`,
      '-device', 'virtio-serial-device,max_ports=1',
      '-device', 'virtconsole,chardev=ch0',
      '-qmp', `unix:${qmpPath},server=on,wait=off`,
      '-serial', this.opts.consoleLog ? `file:${path.join(dir, 'console.log')}` : 'none',
    ];
    let jail: JailedVm | null = null;
    try {
      jail = this.opts.jailer?.prepare(spec, dir) ?? null;
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw new DriverError('VM_START_FAILED', `could not set up the jail of VM ${spec.id}: ${(err as Error).message}`);
    }
    // setpriv (util-linux) execs QEMU with PR_SET_PDEATHSIG: if the worker dies, even by SIGKILL,
    // the kernel kills its VMs too, so a crashed worker leaves no orphaned QEMU behind.
    const [cmd, ...cmdArgs] = jail ? jail.command(this.qemu, args) : ['setpriv', '--pdeathsig', 'KILL', this.qemu, ...args];
    const proc = spawn(cmd!, cmdArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
    const vm = new QemuVm(
      spec,
      dir,
      proc,
      (v) => {
        if (this.vms.get(v.id) === v) this.vms.delete(v.id);
      },
      jail,
    );
    this.vms.set(spec.id, vm);
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve));
    try {
      await this.waitForSockets(vm, [qmpPath, chPath], spawnError);
      const timeout = this.opts.startTimeoutMs ?? 15_000;
      vm.qmp = await QmpClient.open(await connectUnix(qmpPath, timeout), timeout);
      vm.channel = await connectUnix(chPath, timeout);
      return vm;
    } catch (err) {
      await this.destroy(vm, 'create failed');
      const detail = vm.stderrTail.trim();
      throw new DriverError(
        'VM_START_FAILED',
        `could not start QEMU for VM ${spec.id}: ${(err as Error).message}${detail ? ` (${detail})` : ''}`,
      );
    }
  }

  async start(vm: Vm): Promise<void> {
    const q = this.own(vm);
    await this.control(q, 'cont');
    q.state = 'running';
  }

  async pause(vm: Vm): Promise<void> {
    const q = this.own(vm);
    await this.control(q, 'stop');
    q.state = 'paused';
  }

  async snapshot(vm: Vm, statePath: string): Promise<void> {
    const q = this.own(vm);
    await this.ignoreShared(q);
    // QEMU 7.2 throttles migration to 32 MiB/s by default; the state is local.
    await this.control(q, 'migrate-set-parameters', { 'max-bandwidth': 100 * 1024 * 1024 * 1024 });
    await this.control(q, 'stop');
    q.state = 'paused';
    await this.control(q, 'migrate', { uri: `exec:cat > ${shellQuote(statePath)}` });
    await this.waitFor(q, 'migrate', async () => {
      const m = await this.control<{ status?: string; 'error-desc'?: string }>(q, 'query-migrate');
      if (m.status === 'failed' || m.status === 'cancelled') throw new Error(m['error-desc'] ?? `migration ${m.status}`);
      return m.status === 'completed';
    });
  }

  async restore(vm: Vm, statePath: string): Promise<void> {
    const q = this.own(vm);
    await this.ignoreShared(q);
    await this.control(q, 'migrate-incoming', { uri: `exec:cat ${shellQuote(statePath)}` });
    await this.waitFor(q, 'incoming migration', async () => {
      const st = await this.control<{ status: string }>(q, 'query-status');
      if (st.status === 'inmigrate') return false;
      if (st.status === 'paused' || st.status === 'prelaunch') return true;
      throw new Error(`unexpected state ${st.status} after restore`);
    });
    q.state = 'paused';
  }

  private async ignoreShared(q: QemuVm): Promise<void> {
    await this.control(q, 'migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
  }

  private async waitFor(q: QemuVm, what: string, done: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await done())) {
      if (Date.now() > deadline) throw new DriverError('VM_CONTROL_FAILED', `${what} of VM ${q.id} did not finish in ${timeoutMs} ms`);
      await sleep(2);
    }
  }

  async queryState(vm: Vm): Promise<VmState> {
    const q = this.own(vm);
    if (q.state === 'exited' || !q.qmp) return 'exited';
    const st = await this.control<{ status: string }>(q, 'query-status');
    switch (st.status) {
      case 'prelaunch':
        return 'prepared';
      case 'running':
        return 'running';
      case 'paused':
        return q.state === 'prepared' ? 'prepared' : 'paused';
      default:
        return 'exited';
    }
  }

  destroy(vm: Vm, why = 'destroyed by the worker'): Promise<void> {
    if (!(vm instanceof QemuVm)) throw new DriverError('VM_GONE', `VM ${vm.id} was not made by this driver`);
    if (!vm.destroying) {
      vm.destroyReason ??= why;
      vm.destroying = (async () => {
        if (vm.state !== 'exited') vm.proc.kill('SIGKILL');
        await vm.exited;
      })();
    }
    return vm.destroying;
  }

  async close(): Promise<void> {
    await Promise.all([...this.vms.values()].map((vm) => this.destroy(vm, 'driver closed')));
    await this.opts.jailer?.close();
  }

  /** The jail of a VM (uid, cgroup, limits), or null when the jailer is off. */
  jailOf(vm: Vm): JailedVm | null {
    return this.own(vm).jail;
  }

  /**
   * Memory the VM's QEMU process really uses, in KiB: its PSS (proportional set
   * size: pages shared with other clones count for their share only).
   */
  memoryPssKiB(vm: Vm): number | null {
    const q = this.own(vm);
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${q.proc.pid}/smaps_rollup`, 'utf8'));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  }

  /**
   * Pages a paused VM's private memory out to swap (./page-out.ts); resolves to
   * the bytes advised. Only for a paused VM: a running one would fault it all back.
   */
  async reclaim(vm: Vm): Promise<number> {
    const q = this.own(vm);
    if (q.state !== 'paused' && q.state !== 'prepared') throw new DriverError('VM_CONTROL_FAILED', `VM ${q.id} is ${q.state}, not paused`);
    if (!this.opts.cacheDir || q.proc.pid === undefined) return 0;
    try {
      return await pageOut(await pageOutHelper(this.opts.cacheDir), q.proc.pid, q.spec.memoryFile?.path);
    } catch (err) {
      throw new DriverError('VM_CONTROL_FAILED', `page-out of VM ${q.id} failed: ${(err as Error).message}`);
    }
  }

  /** Ids of the VMs this driver still owns (tests use it to prove nothing leaks). */
  liveVmIds(): string[] {
    return [...this.vms.keys()];
  }

  /** PIDs of this driver's QEMU processes. */
  pids(): number[] {
    return [...this.vms.values()].map((v) => v.proc.pid).filter((p): p is number => p !== undefined);
  }

  private own(vm: Vm): QemuVm {
    const q = this.vms.get(vm.id);
    if (!q || q !== vm) throw new DriverError('VM_GONE', `VM ${vm.id} is not (or no longer) owned by this driver`);
    return q;
  }

  private async control<T>(q: QemuVm, command: string, args?: Record<string, unknown>): Promise<T> {
    if (q.state === 'exited' || !q.qmp) throw new DriverError('VM_GONE', `VM ${q.id} has exited`);
    try {
      return await q.qmp.execute<T>(command, args);
    } catch (err) {
      throw new DriverError('VM_CONTROL_FAILED', `${command} on VM ${q.id} failed: ${(err as Error).message}`);
    }
  }

  private async waitForSockets(vm: QemuVm, paths: string[], spawnError: Promise<Error>): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 15_000);
    let failed: Error | null = null;
    void spawnError.then((e) => (failed = e));
    for (;;) {
      if (failed) throw failed;
      if (vm.state === 'exited') throw new Error('QEMU exited during start');
      if (paths.every((p) => fs.existsSync(p))) return;
      if (Date.now() > deadline) throw new Error('QEMU did not create its sockets in time');
      await sleep(5);
    }
  }
}

/**
 * Connects to a socket QEMU serves. The socket file appears (bind) a moment
 * before QEMU listens on it, so a refused connection is retried until the deadline.
 */
async function connectUnix(p: string, timeoutMs: number): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection(p);
        s.once('connect', () => {
          s.removeAllListeners('error');
          // The channel's user learns of failures from 'close' and the VM's exit.
          s.on('error', () => {});
          resolve(s);
        });
        s.once('error', (err) => {
          s.destroy();
          reject(err);
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ECONNREFUSED' && code !== 'ENOENT') || Date.now() > deadline) {
        throw new Error(`could not connect to ${p}: ${(err as Error).message}`);
      }
      await sleep(5);
    }
  }
}

function shellQuote(p: string): string {
  return `'${p.replace(/'/g, `'\\''`)}'`;
}

/** A run folder short enough for unix socket paths, unique to this process. */
export function defaultRunDir(): string {
  return path.join(os.tmpdir(), `mayfly-${process.pid}`);
}
