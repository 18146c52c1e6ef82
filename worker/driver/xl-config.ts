/**
 * Pure parts of the Xen driver (no I/O, unit tested in test/xen/xl-config.test.ts):
 * the per-VM `xl` guest config, the guest kernel command line, parsing of
 * `xl list` / `xl list -l` output, domain naming, and the console preamble skipper.
 */
import { FRAME_HEADER_BYTES, FRAME_MAGIC_0, FRAME_MAGIC_1 } from '../../contracts/frame.js';
import { GUEST_KERNEL_ARGS } from './guest-kernel-args.js';

export type XenGuestType = 'pvh' | 'pv';

export interface XlConfigInput {
  name: string;
  type: XenGuestType;
  kernelPath: string;
  initrdPath: string;
  memoryMiB: number;
  vcpus: number;
  cmdline: string;
  /**
   * Hard affinity of the guest's vCPUs (xl's `cpus`, e.g. "1", "2-3", "^0"); none when unset.
   * The nested test host pins guests away from pCPU 0 (see test/xen/nested-host.ts).
   */
  cpus?: string;
}

/** The subset of xl's `cpus` syntax accepted here: "all", or a list of CPUs / ranges, each optionally negated. */
export function validCpus(cpus: string): boolean {
  return /^(all|\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*)$/.test(cpus);
}

/**
 * Kernel arguments of a Xen guest. The agent's channel is hvc0 (the Xen PV
 * console), so the kernel console and init's stdio must NOT be hvc0:
 * `console=tty0` points /dev/console at the (dummy) VT, `quiet loglevel=0`
 * keeps printk quiet. The host still skips non-frame bytes before the first
 * frame (ConsolePreamble), in case a kernel prints to hvc0 anyway.
 */
export const XEN_BASE_KERNEL_ARGS = ['console=tty0', 'quiet', 'loglevel=0', ...GUEST_KERNEL_ARGS, '8250.nr_uarts=0'];

export function xenKernelCommandLine(extra: string[] = []): string {
  return [...XEN_BASE_KERNEL_ARGS, ...extra].join(' ');
}

/** A string value in xl's config syntax (double quoted; no quotes/newlines allowed in the value). */
export function xlString(v: string): string {
  if (/["\\\n\r]/.test(v)) throw new Error(`value not allowed in an xl config: ${JSON.stringify(v)}`);
  return `"${v}"`;
}

/** The guest config `xl create` reads. No disk, no network: the guest only has its PV console. */
export function renderXlConfig(c: XlConfigInput): string {
  if (!Number.isInteger(c.memoryMiB) || c.memoryMiB < 16) throw new Error(`invalid guest memory ${c.memoryMiB} MiB`);
  if (!Number.isInteger(c.vcpus) || c.vcpus < 1) throw new Error(`invalid vcpus ${c.vcpus}`);
  if (c.cpus !== undefined && !validCpus(c.cpus)) throw new Error(`invalid cpus "${c.cpus}" (e.g. "1", "2-3", "^0")`);
  const lines = [
    `# Mayfly guest ${c.name} (generated; one file per VM)`,
    `name = ${xlString(c.name)}`,
    `type = ${xlString(c.type)}`,
    `kernel = ${xlString(c.kernelPath)}`,
    `ramdisk = ${xlString(c.initrdPath)}`,
    `extra = ${xlString(c.cmdline)}`,
    `memory = ${c.memoryMiB}`,
    `maxmem = ${c.memoryMiB}`,
    `vcpus = ${c.vcpus}`,
    ...(c.cpus !== undefined ? [`cpus = ${xlString(c.cpus)}`] : []),
    'vif = []',
    'disk = []',
    'on_poweroff = "destroy"',
    'on_reboot = "destroy"',
    'on_crash = "destroy"',
  ];
  // PVH under TCG (nested Xen in QEMU): without it the guest hangs on RDTSCP. Harmless on hardware.
  if (c.type === 'pvh') lines.push('tsc_mode = "native"');
  return lines.join('\n') + '\n';
}

/** Domain names of one worker: `<prefix><vm id>`. The prefix must be the worker's own. */
export function domainName(prefix: string, vmId: string): string {
  const name = `${prefix}${vmId}`;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new Error(`invalid Xen domain name "${name}"`);
  return name;
}

export function validPrefix(prefix: string): boolean {
  return /^[A-Za-z0-9_.-]{2,40}$/.test(prefix) && /[-_.]$/.test(prefix);
}

export interface XlDomain {
  domid: number;
  name: string;
}

/** `xl list -l` prints a JSON array of {domid, config: {c_info: {name}}}; dom0 has domid 0. */
export function parseXlListJson(stdout: string): XlDomain[] {
  const text = stdout.trim();
  if (text === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`xl list -l printed no valid JSON: ${(err as Error).message}`);
  }
  const arr = Array.isArray(parsed) ? parsed : [parsed];
  const out: XlDomain[] = [];
  for (const d of arr) {
    if (typeof d !== 'object' || d === null) continue;
    const rec = d as { domid?: unknown; config?: { c_info?: { name?: unknown } } };
    const name = rec.config?.c_info?.name;
    if (typeof rec.domid === 'number' && typeof name === 'string') out.push({ domid: rec.domid, name });
  }
  return out;
}

export type XlRunState = 'running' | 'blocked' | 'paused' | 'shutdown' | 'crashed' | 'dying' | 'unknown';

export interface XlListRow {
  name: string;
  domid: number;
  memMiB: number;
  vcpus: number;
  state: XlRunState;
  flags: string;
}

/**
 * `xl list [name]` text: a header then `Name ID Mem VCPUs State Time(s)`;
 * State is six flag columns `rbpscd` (running, blocked, paused, shutdown, crashed, dying).
 */
export function parseXlListText(stdout: string): XlListRow[] {
  const rows: XlListRow[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([-rbpscd]{6})\s+[\d.]+\s*$/.exec(line.trim());
    if (!m) continue;
    rows.push({ name: m[1]!, domid: Number(m[2]), memMiB: Number(m[3]), vcpus: Number(m[4]), flags: m[5]!, state: flagsToState(m[5]!) });
  }
  return rows;
}

export function flagsToState(flags: string): XlRunState {
  // The most final flag wins.
  if (flags.includes('d')) return 'dying';
  if (flags.includes('c')) return 'crashed';
  if (flags.includes('s')) return 'shutdown';
  if (flags.includes('p')) return 'paused';
  if (flags.includes('r')) return 'running';
  if (flags.includes('b')) return 'blocked';
  return 'unknown';
}

/** `xl` says this when the domain does not exist (any more). */
export function isNoSuchDomain(stderr: string): boolean {
  return /invalid domain identifier|is an invalid domain identifier|not found|No such domain/i.test(stderr);
}

/**
 * Skips whatever the guest writes to hvc0 before the agent's first frame
 * (kernel or init messages, if any end up there). Only a `MF` magic followed by
 * a length within bounds and a `{` starts the protocol; from then on every byte
 * is passed through, so garbage after the first frame is still a fault for the
 * GuestChannel. At most `maxSkip` bytes are skipped; beyond that the stream is
 * passed through as is (and the decoder reports it as a bad frame).
 */
export class ConsolePreamble {
  private started = false;
  private held = Buffer.alloc(0);
  skipped = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly maxSkip = 1 << 20,
  ) {}

  get inProtocol(): boolean {
    return this.started;
  }

  /** Returns the bytes to pass on (possibly empty). */
  push(chunk: Buffer): Buffer {
    if (this.started) return chunk;
    let buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] !== FRAME_MAGIC_0) continue;
      if (i + FRAME_HEADER_BYTES + 1 > buf.length) {
        // Maybe a frame start cut by the chunk boundary: hold it back.
        this.skipped += i;
        this.held = Buffer.from(buf.subarray(i));
        return this.checkLimit();
      }
      if (buf[i + 1] !== FRAME_MAGIC_1) continue;
      const len = buf.readUInt32BE(i + 2);
      if (len < 2 || len > this.maxFrameBytes || buf[i + FRAME_HEADER_BYTES] !== 0x7b /* { */) continue;
      this.started = true;
      this.skipped += i;
      this.held = Buffer.alloc(0);
      return buf.subarray(i);
    }
    this.skipped += buf.length;
    this.held = Buffer.alloc(0);
    buf = Buffer.alloc(0);
    return this.checkLimit();
  }

  private checkLimit(): Buffer {
    if (this.skipped <= this.maxSkip) return Buffer.alloc(0);
    // Too much noise: stop skipping and let the frame decoder judge the rest.
    this.started = true;
    const rest = this.held;
    this.held = Buffer.alloc(0);
    return rest;
  }
}
