/**
 * Xen driver: one Xen domain per VM, driven with `xl` from dom0.
 *
 * `create` writes a per-VM guest config (PVH by default, PV as fallback: no
 * disk, no network, only the PV console), runs `xl create -p` (the domain is
 * built and left paused before its first instruction: the prepare phase of
 * LightVM's split toolstack, done with stock xl), reads the console pty that
 * xenconsoled published in xenstore (/local/domain/<domid>/console/tty) and
 * opens it in raw mode: that pty is the host side of the guest's /dev/hvc0,
 * which the agent already uses as its channel. `start` is `xl unpause`,
 * `pause` is `xl pause`, `destroy` is `xl destroy`; `snapshot`/`restore` are
 * `xl save` / `xl restore -p` (a restore always makes a new domain, so a VM
 * created with `incoming` has no domain until `restore`).
 *
 * Every xl call has a timeout and fails with a DriverError carrying xl's
 * stderr. Domains are named `<prefix><vm id>`; the prefix is the worker's own,
 * so `sweep()` (run by `XenDriver.open`) destroys the domains a crashed
 * earlier run of the same worker left behind.
 *
 * The QEMU driver's jailer (./jailer/) has little to cage here: a PVH/PV domain
 * is no dom0 process but a guest isolated by the hypervisor itself. What maps:
 * memory is capped by Xen (`maxmem` = `memory`, no ballooning up); CPU fairness
 * is the Xen scheduler's (credit2 weight per domain; a `cap` is not set yet);
 * no device model runs (PVH/PV need no qemu-dm; an HVM guest would, and Xen's
 * `device_model_user` + dm_restrict are its jailer). The dom0 side is `xl` and
 * the shared xenconsoled, both trusted toolstack parts, not per-VM processes.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Duplex } from 'node:stream';
import tty from 'node:tty';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_FRAME_BYTES } from '../../contracts/guest-protocol.js';
import {
  ConsolePreamble,
  domainName,
  isNoSuchDomain,
  parseXlListJson,
  parseXlListText,
  renderXlConfig,
  validCpus,
  validPrefix,
  xenKernelCommandLine,
  type XenGuestType,
} from './xl-config.js';
import { runTool, XlError, type XlResult } from './xl-run.js';
import { DriverError, type HypervisorDriver, type Vm, type VmExit, type VmSpec, type VmState } from './types.js';

export interface XenDriverOptions {
  /** Folder for the per-VM guest configs. */
  runDir: string;
  /** Domain name prefix, the worker's own (e.g. `mayfly-w1-`). */
  namePrefix: string;
  type?: XenGuestType;
  xlBinary?: string;
  xenstoreReadBinary?: string;
  /** Timeout of one xl call (create, restore and save get 3×). */
  xlTimeoutMs?: number;
  /** How long xenconsoled may take to publish the console pty. */
  consoleTimeoutMs?: number;
  /**
   * Added to every guest's memory. A Linux guest under Xen keeps more for itself
   * than under QEMU microvm (swiotlb-xen bounce buffers, grant tables): without it
   * the initramfs no longer fits ("Initramfs unpacking failed: write error").
   */
  memoryOverheadMiB?: number;
  /**
   * Hard affinity of every guest vCPU (xl's `cpus`, e.g. "1"; MAYFLY_XEN_GUEST_CPUS); none:
   * no pinning. The nested test host sets "1" (guests off pCPU 0; see test/xen/nested-host.ts).
   */
  cpus?: string;
}

export const XEN_GUEST_MEMORY_OVERHEAD_MIB = 128;

/** Host side of the guest's hvc0: the console pty, with bytes before the first frame skipped. */
export class ConsoleChannel extends Duplex {
  private ttyStream: tty.ReadStream | null = null;
  private readonly preamble = new ConsolePreamble(MAX_FRAME_BYTES);
  private pendingWrites: Array<{ chunk: Buffer; cb: (e?: Error | null) => void }> = [];

  constructor() {
    super({ allowHalfOpen: false });
  }

  /** Bytes skipped before the first frame (kernel or init noise on hvc0). */
  get skippedBytes(): number {
    return this.preamble.skipped;
  }

  attach(ttyPath: string): void {
    const fd = fs.openSync(ttyPath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    // Not setRawMode(): libuv's raw mode keeps ONLCR (\n -> \r\n on output), which corrupts frames.
    // The driver runs `stty raw -echo` on the pty before attaching (xenconsoled makes it raw too).
    const s = new tty.ReadStream(fd);
    this.ttyStream = s;
    s.on('data', (d: Buffer) => {
      const out = this.preamble.push(d);
      if (out.length) this.push(out);
    });
    // xenconsoled closes the pty master when the domain goes: the slave reads EIO.
    s.on('error', () => this.destroy());
    s.on('close', () => this.destroy());
    s.on('end', () => this.destroy());
    for (const w of this.pendingWrites.splice(0)) s.write(w.chunk, w.cb);
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (!this.ttyStream) {
      this.pendingWrites.push({ chunk, cb });
      return;
    }
    this.ttyStream.write(chunk, cb);
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    const s = this.ttyStream;
    this.ttyStream = null;
    if (s) {
      s.removeAllListeners('data');
      s.on('error', () => {});
      s.destroy();
    }
    cb(err);
  }
}

class XenVm implements Vm {
  state: VmState = 'prepared';
  readonly exited: Promise<VmExit>;
  readonly channel = new ConsoleChannel();
  destroying: Promise<void> | null = null;
  destroyReason: string | null = null;
  domid: number | null = null;
  private resolveExit!: (e: VmExit) => void;

  constructor(
    readonly spec: VmSpec,
    readonly name: string,
    readonly configPath: string,
    private readonly onGone: (vm: XenVm) => void,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  get id(): string {
    return this.spec.id;
  }

  gone(detail: string): void {
    if (this.state === 'exited') return;
    this.state = 'exited';
    this.channel.destroy();
    fs.rmSync(this.configPath, { force: true });
    this.onGone(this);
    this.resolveExit(
      this.destroyReason !== null
        ? { reason: 'destroyed', detail: this.destroyReason }
        : { reason: 'crashed', detail: `domain ${this.name} ended by itself (${detail})` },
    );
  }
}

export class XenDriver implements HypervisorDriver {
  readonly name = 'xen';
  /** For logs and `mayfly run` output (the QEMU driver reports kvm/tcg here). */
  readonly accel: string;
  private readonly vms = new Map<string, XenVm>();
  private readonly xl: string;
  private readonly xsRead: string;
  private readonly timeoutMs: number;
  private readonly type: XenGuestType;
  private readonly cpus: string | undefined;

  constructor(private readonly opts: XenDriverOptions) {
    if (!validPrefix(opts.namePrefix)) {
      throw new DriverError('DRIVER_UNAVAILABLE', `invalid Xen domain name prefix "${opts.namePrefix}" (letters, digits, ._- ; ends with a separator)`);
    }
    this.xl = opts.xlBinary ?? 'xl';
    this.xsRead = opts.xenstoreReadBinary ?? 'xenstore-read';
    this.timeoutMs = opts.xlTimeoutMs ?? 60_000;
    this.type = opts.type ?? 'pvh';
    this.cpus = opts.cpus || undefined;
    if (this.cpus !== undefined && !validCpus(this.cpus)) {
      throw new DriverError('DRIVER_UNAVAILABLE', `invalid guest CPU affinity "${this.cpus}" (MAYFLY_XEN_GUEST_CPUS: e.g. "1", "2-3", "^0")`);
    }
    this.accel = `xen-${this.type}`;
  }

  /** A driver ready to use: checks that xl answers, then destroys this worker's leftover domains. */
  static async open(opts: XenDriverOptions): Promise<XenDriver> {
    const d = new XenDriver(opts);
    await fsp.mkdir(opts.runDir, { recursive: true, mode: 0o700 });
    try {
      await d.xlRun(['info'], d.timeoutMs);
    } catch (err) {
      throw new DriverError('DRIVER_UNAVAILABLE', `Xen is not usable here: ${(err as Error).message}`);
    }
    await d.sweep();
    return d;
  }

  get namePrefix(): string {
    return this.opts.namePrefix;
  }

  kernelCommandLine(spec: VmSpec): string {
    return xenKernelCommandLine(spec.kernelArgs ?? []);
  }

  guestConfig(spec: VmSpec, name: string): string {
    return renderXlConfig({
      name,
      type: this.type,
      kernelPath: spec.kernelPath,
      initrdPath: spec.initrdPath,
      memoryMiB: spec.memoryMiB + (this.opts.memoryOverheadMiB ?? XEN_GUEST_MEMORY_OVERHEAD_MIB),
      vcpus: spec.vcpus ?? 1,
      cmdline: this.kernelCommandLine(spec),
      cpus: this.cpus,
    });
  }

  /** Every domain whose name starts with this worker's prefix (`xl list -l`, JSON). */
  async ownDomains(): Promise<Array<{ domid: number; name: string }>> {
    const r = await this.xlRun(['list', '-l'], this.timeoutMs);
    return parseXlListJson(r.stdout).filter((d) => d.domid !== 0 && d.name.startsWith(this.opts.namePrefix));
  }

  /** Destroys domains with this worker's prefix that this driver does not own (left by a crashed run). */
  async sweep(): Promise<string[]> {
    const mine = new Set([...this.vms.values()].map((v) => v.name));
    const stale = (await this.ownDomains()).filter((d) => !mine.has(d.name));
    for (const d of stale) {
      await this.xlRun(['destroy', String(d.domid)], this.timeoutMs).catch((err: XlError) => {
        if (!isNoSuchDomain(err.stderr)) throw err;
      });
    }
    return stale.map((d) => d.name);
  }

  async create(spec: VmSpec): Promise<Vm> {
    if (!/^[A-Za-z0-9_-]{1,48}$/.test(spec.id)) throw new DriverError('VM_START_FAILED', `invalid VM id "${spec.id}"`);
    if (this.vms.has(spec.id)) throw new DriverError('VM_START_FAILED', `VM id "${spec.id}" is already in use`);
    let name: string;
    let config: string;
    try {
      name = domainName(this.opts.namePrefix, spec.id);
      config = this.guestConfig(spec, name);
    } catch (err) {
      throw new DriverError('VM_START_FAILED', `bad guest config for VM ${spec.id}: ${(err as Error).message}`);
    }
    const configPath = path.join(this.opts.runDir, `${name}.cfg`);
    await fsp.mkdir(this.opts.runDir, { recursive: true, mode: 0o700 });
    await fsp.writeFile(configPath, config, { mode: 0o600 });
    const vm = new XenVm(spec, name, configPath, (v) => {
      if (this.vms.get(v.id) === v) this.vms.delete(v.id);
    });
    this.vms.set(spec.id, vm);
    // A VM that waits for a saved state gets its domain from `xl restore` (see restore()).
    if (spec.incoming) return vm;
    try {
      await this.xlRun(['create', '-p', configPath], this.timeoutMs * 3);
      await this.connect(vm);
      return vm;
    } catch (err) {
      await this.destroy(vm, 'create failed').catch(() => {});
      throw new DriverError('VM_START_FAILED', `could not create Xen domain ${name}: ${(err as Error).message}`);
    }
  }

  /** Finds the domain id and attaches the console pty (the domain is paused: nothing is lost). */
  private async connect(vm: XenVm): Promise<void> {
    const r = await this.xlRun(['domid', vm.name], this.timeoutMs);
    const domid = Number(r.stdout.trim());
    if (!Number.isInteger(domid) || domid <= 0) throw new Error(`xl domid ${vm.name} printed "${r.stdout.trim()}"`);
    vm.domid = domid;
    const ttyPath = await this.consolePty(domid);
    // Binary-clean: no echo, no CR/LF translation in either direction, no signals.
    await runTool('stty', ['-F', ttyPath, 'raw', '-echo', '-opost'], this.timeoutMs);
    vm.channel.attach(ttyPath);
    // The pty closes when the domain goes (destroyed, powered off, crashed): confirm and report.
    vm.channel.once('close', () => void this.checkGone(vm));
  }

  private async consolePty(domid: number): Promise<string> {
    const deadline = Date.now() + (this.opts.consoleTimeoutMs ?? 20_000);
    const key = `/local/domain/${domid}/console/tty`;
    for (;;) {
      const r = await runTool(this.xsRead, [key], this.timeoutMs).catch(() => null);
      const p = r?.stdout.trim();
      if (p && p.startsWith('/dev/')) return p;
      if (Date.now() > deadline) throw new Error(`xenconsoled published no console pty at ${key} (is xenconsoled running?)`);
      await sleep(50);
    }
  }

  private async checkGone(vm: XenVm): Promise<void> {
    if (vm.state === 'exited' || vm.destroying) return;
    const st = await this.domainState(vm.name).catch(() => 'unknown' as const);
    if (st === 'gone' || st === 'shutdown' || st === 'crashed' || st === 'dying') {
      // Shut down but not yet reaped: make sure it is gone.
      if (st !== 'gone') await this.xlRun(['destroy', vm.name], this.timeoutMs).catch(() => {});
      vm.gone(`console closed, domain ${st}`);
    }
  }

  private async domainState(name: string): Promise<'gone' | ReturnType<typeof parseXlListText>[number]['state']> {
    try {
      const r = await this.xlRun(['list', name], this.timeoutMs);
      const row = parseXlListText(r.stdout).find((x) => x.name === name);
      return row ? row.state : 'gone';
    } catch (err) {
      if (err instanceof XlError && isNoSuchDomain(err.stderr)) return 'gone';
      throw err;
    }
  }

  async start(vm: Vm): Promise<void> {
    const x = this.own(vm);
    await this.control(x, ['unpause', x.name]);
    x.state = 'running';
  }

  async pause(vm: Vm): Promise<void> {
    const x = this.own(vm);
    await this.control(x, ['pause', x.name]);
    x.state = 'paused';
  }

  /** `xl save`: writes the domain's whole state (RAM included) to statePath; the domain is gone afterwards. */
  async snapshot(vm: Vm, statePath: string): Promise<void> {
    const x = this.own(vm);
    x.destroyReason ??= 'saved to a template';
    await this.control(x, ['save', x.name, statePath], this.timeoutMs * 3);
    x.gone('saved');
  }

  /** `xl restore -p` with this VM's own config (its own name), so one checkpoint gives many clones. */
  async restore(vm: Vm, statePath: string): Promise<void> {
    const x = this.own(vm);
    if (x.domid !== null) throw new DriverError('VM_CONTROL_FAILED', `VM ${x.id} already has a domain; create it with incoming`);
    try {
      await this.xlRun(['restore', '-p', x.configPath, statePath], this.timeoutMs * 3);
      await this.connect(x);
      x.state = 'paused';
    } catch (err) {
      throw new DriverError('VM_CONTROL_FAILED', `restore of ${x.name} from ${statePath} failed: ${(err as Error).message}`);
    }
  }

  async queryState(vm: Vm): Promise<VmState> {
    const x = this.own(vm);
    if (x.state === 'exited') return 'exited';
    if (x.domid === null) return 'prepared';
    const st = await this.domainState(x.name).catch((err: Error) => {
      throw new DriverError('VM_CONTROL_FAILED', `state of ${x.name}: ${err.message}`);
    });
    switch (st) {
      case 'running':
      case 'blocked':
        return 'running';
      case 'paused':
        return x.state === 'prepared' ? 'prepared' : 'paused';
      default:
        return 'exited';
    }
  }

  destroy(vm: Vm, why = 'destroyed by the worker'): Promise<void> {
    if (!(vm instanceof XenVm)) throw new DriverError('VM_GONE', `VM ${vm.id} was not made by this driver`);
    if (!vm.destroying) {
      vm.destroyReason ??= why;
      vm.destroying = (async () => {
        if (vm.state !== 'exited') {
          try {
            await this.xlRun(['destroy', vm.name], this.timeoutMs);
          } catch (err) {
            // Never created (create failed early) or already gone: both fine. Anything else is reported.
            if (!(err instanceof XlError && isNoSuchDomain(err.stderr))) {
              vm.gone(`destroy failed: ${(err as Error).message}`);
              throw new DriverError('VM_CONTROL_FAILED', `xl destroy ${vm.name} failed: ${(err as Error).message}`);
            }
          }
          vm.gone('destroyed');
        }
        await vm.exited;
      })();
    }
    return vm.destroying;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.vms.values()].map((vm) => this.destroy(vm, 'driver closed')));
  }

  /** Xen has no per-VM process: the domain's RAM is fixed at creation (no sharing to measure). */
  memoryPssKiB(_vm: Vm): number | null {
    return null;
  }

  /** Xen domains are not processes of the worker: there are no PIDs to report. */
  pids(): number[] {
    return [];
  }

  liveVmIds(): string[] {
    return [...this.vms.keys()];
  }

  private own(vm: Vm): XenVm {
    const x = this.vms.get(vm.id);
    if (!x || x !== vm) throw new DriverError('VM_GONE', `VM ${vm.id} is not (or no longer) owned by this driver`);
    return x;
  }

  private async control(x: XenVm, args: string[], timeoutMs = this.timeoutMs): Promise<XlResult> {
    if (x.state === 'exited') throw new DriverError('VM_GONE', `VM ${x.id} has exited`);
    try {
      return await this.xlRun(args, timeoutMs);
    } catch (err) {
      throw new DriverError('VM_CONTROL_FAILED', `${(err as Error).message}`);
    }
  }

  private xlRun(args: string[], timeoutMs: number): Promise<XlResult> {
    return runTool(this.xl, args, timeoutMs);
  }
}
