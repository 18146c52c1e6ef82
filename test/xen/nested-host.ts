/**
 * The nested Xen test host, from the outer machine: stages the per-run project
 * disk (node, dist/, node_modules, the guest image, dom0-init.sh, run.env),
 * boots Xen + dom0 (infra/xen/build-dom0.sh's cached base image) under
 * qemu-system-x86_64 with TCG, and reads the dom0 console (QEMU's serial port)
 * for `XENTEST <json>` result lines. Networking is QEMU user mode with
 * `restrict=on` and one guestfwd: dom0's 10.0.2.100:4222 reaches the outer
 * nats-server on 127.0.0.1 and nothing else. `stop()` kills QEMU by its PID.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PROJECT_ROOT } from '../../contracts/config.js';

export const XEN_CACHE = process.env.MAYFLY_XEN_CACHE ?? path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'mayfly', 'xen');
export const BASE = path.join(XEN_CACHE, 'base');

/**
 * Where guest vCPUs may run on the nested host (xl `cpus`, via MAYFLY_XEN_GUEST_CPUS; '' = no
 * pinning, i.e. Xen's default). Default "1": guests on pCPU 1, with dom0's vCPU pinned to pCPU 0
 * (`dom0_vcpus_pin`). Why: PVH guests on this host occasionally died early in boot with
 * "(XEN) dNv0 Triple fault - invoking HVM shutdown action", and every register dump seen (21:
 * 3 in earlier runs, 18 in the boot loop) was of a guest vCPU on pCPU 0, at or just after an
 * intercepted instruction: almost all in the kernel's PIT calibration loop (quick_pit_calibrate,
 * `in $0x42`: up to 50000 IOIO exits per boot, interrupts off), one after an x2APIC EOI wrmsr.
 * Why pCPU 0 (QEMU's first vCPU thread, the boot CPU, where device and platform-timer interrupts
 * go) was not established: a race in QEMU 7.2's emulated SVM is the likely cause. Measured with the
 * boot loop (debug-run.js MAYFLY_XEN_BOOTLOOP=30 MAYFLY_XEN_BOOTLOOP_CONCURRENCY=2
 * MAYFLY_XEN_BOOTLOOP_BURN=1, i.e. a busy dom0; 2026-11-29):
 * unpinned, 6 triple faults in 30 boots; guests pinned to pCPU 0 (dom0 on 1), 12/30; guests on
 * pCPU 1 (dom0 on 0; `xl vcpu-pin` once, then this default twice), 0 triple faults in 150 boots —
 * but 1 of the 150 still died at boot without a triple fault (no console output with the quiet
 * guest kernel line), like the thread=single deaths below: rarer, not gone (the worker retries a
 * VM that fails while starting once).
 * Single-threaded TCG (MAYFLY_XEN_QEMU_ACCEL=tcg,thread=single, unpinned) is no cure: no triple
 * fault, but 5 of 30 guests died at boot without one, and 1 of 20 in a rerun with the guest's
 * printk on hvc0 (loglevel=7): "Kernel panic - not syncing: Fatal exception in interrupt" after
 * a page fault in error_entry on the entry stack — broken exception delivery again; boots took
 * 13-14 s instead of 7.5 s.
 * A workaround for the emulation, like spec-ctrl=eager-fpu; Xen hardware needs no pinning.
 */
const GUEST_CPUS = process.env.MAYFLY_XEN_GUEST_CPUS ?? '1';

export interface XenReport {
  check: string;
  ok: boolean;
  [k: string]: unknown;
}

export interface NestedHostOptions {
  natsPort: number;
  imageDir: string;
  /** Extra environment for the dom0 controller and the worker (run.env). */
  env?: Record<string, string>;
  memoryMiB?: number;
  /** More prebuilt images to stage, by name: dom0 finds them in /opt/mayfly/images/<name>. */
  extraImages?: Record<string, string>;
  /** QEMU -cpu model (default MAYFLY_XEN_QEMU_CPU or the built-in default below). */
  cpu?: string;
  /** Extra Xen command-line options (default MAYFLY_XEN_EXTRA_ARGS). */
  xenExtraArgs?: string;
}

export class NestedXenHost {
  readonly reports: XenReport[] = [];
  readonly consoleLog: string;
  proc: ChildProcess | null = null;
  exited: Promise<number | null> = Promise.resolve(null);
  readonly startedAt = Date.now();
  private listeners: Array<() => void> = [];

  private constructor(readonly dir: string) {
    this.consoleLog = path.join(dir, 'console.log');
  }

  /** Stages the project disk and boots the host. */
  static async start(opts: NestedHostOptions): Promise<NestedXenHost> {
    for (const f of ['xen.elf', 'vmlinuz', 'initrd.img', 'dom0.img']) {
      if (!fs.existsSync(path.join(BASE, f))) throw new Error(`${path.join(BASE, f)} is missing: run infra/xen/build-dom0.sh first`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfxen-'));
    const h = new NestedXenHost(dir);
    const app = path.join(dir, 'app');
    fs.mkdirSync(path.join(app, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(app, 'infra'), { recursive: true });
    fs.mkdirSync(path.join(app, 'image'), { recursive: true });
    // Hard links would tie the staging to one filesystem; the copy is ~200 MB and takes seconds.
    execFileSync('cp', ['-a', path.join(PROJECT_ROOT, 'dist'), path.join(PROJECT_ROOT, 'node_modules'), path.join(PROJECT_ROOT, 'package.json'), app]);
    execFileSync('cp', ['-a', path.join(PROJECT_ROOT, 'infra', 'xen'), path.join(app, 'infra', 'xen')]);
    fs.copyFileSync(fs.realpathSync(process.execPath), path.join(app, 'bin', 'node'));
    fs.chmodSync(path.join(app, 'bin', 'node'), 0o755);
    for (const f of ['vmlinux', 'initrd.img', 'manifest.json']) fs.copyFileSync(path.join(opts.imageDir, f), path.join(app, 'image', f));
    for (const [name, dir] of Object.entries(opts.extraImages ?? {})) {
      fs.mkdirSync(path.join(app, 'images', name), { recursive: true });
      for (const f of ['vmlinux', 'initrd.img', 'manifest.json']) fs.copyFileSync(path.join(dir, f), path.join(app, 'images', name, f));
    }
    const env: Record<string, string> = {
      MAYFLY_NATS_URL: 'nats://10.0.2.100:4222',
      MAYFLY_DRIVER: 'xen',
      MAYFLY_HOST_ID: 'xen1',
      MAYFLY_IMAGE_DIR: '/opt/mayfly/image',
      MAYFLY_CACHE_DIR: '/tmp/mayfly-cache',
      MAYFLY_RUN_DIR: '/run/mayfly',
      MAYFLY_TEMPLATE_DIR: '/tmp/mayfly-templates',
      MAYFLY_DATA_DIR: '/tmp/mayfly-data',
      MAYFLY_CLONES: '0',
      MAYFLY_POOL_SIZE: '1',
      MAYFLY_POOL_MAX: '1',
      MAYFLY_MEMORY_BUDGET_MB: '1200',
      MAYFLY_BOOT_TIMEOUT_MS: '240000',
      MAYFLY_HEARTBEAT_MS: '1000',
      MAYFLY_LOG_LEVEL: 'info',
      MAYFLY_XEN_DEBUG_BOOT: process.env.MAYFLY_XEN_DEBUG_BOOT ?? '0',
      // Guest vCPUs on pCPU 1 only (xl `cpus`), dom0 on pCPU 0 (dom0_vcpus_pin below): see GUEST_CPUS.
      MAYFLY_XEN_GUEST_CPUS: GUEST_CPUS,
      ...opts.env,
    };
    fs.writeFileSync(path.join(app, 'run.env'), Object.entries(env).map(([k, v]) => `${k}='${v}'`).join('\n') + '\n');
    const appImg = path.join(dir, 'app.img');
    const mib = Math.ceil(Number(execFileSync('du', ['-sm', app]).toString().split('\t')[0]) * 1.3) + 128;
    execFileSync('truncate', ['-s', `${mib}M`, appImg]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'mayfly-app', '-d', app, appImg]);
    fs.rmSync(app, { recursive: true, force: true });

    const memory = opts.memoryMiB ?? 3072;
    const cpu = opts.cpu ?? process.env.MAYFLY_XEN_QEMU_CPU ?? 'max';
    const extra = opts.xenExtraArgs ?? process.env.MAYFLY_XEN_EXTRA_ARGS ?? '';
    // spec-ctrl=eager-fpu is a workaround for the emulation, not a tuning knob. `-cpu max` under
    // TCG is an AMD CPU, and on AMD Xen defaults to LAZY FPU switching: after a vCPU switch it sets
    // CR0.TS and restores the incoming vCPU's FPU/SSE/AVX registers only when that vCPU traps with
    // #NM. Under QEMU 7.2's TCG that is not reliable: register state leaks between vCPUs, so
    // processes in dom0 and in guests compute with another vCPU's registers. Measured with
    // test/xen/fpu-stress.ts (debug-run.js MAYFLY_XEN_STRESS_S=45 MAYFLY_XEN_STRESS_ONLY=1): lazy,
    // both dom0 stress processes died with SIGSEGV and a guest got 5448 wrong results of 5450;
    // eager (Xen saves and restores the state on every vCPU switch), none. It is what killed the
    // worker in dom0 ("async hook stack has become corrupted (actual: 0, expected: 0)", then
    // SIGSEGV) once the first pool guest ran. Real AMD hardware does not need it (Xen on Intel
    // is eager by default anyway); the cost, a save/restore per vCPU switch, is small.
    // smap=0 smep=0: see ../shared/notes/xen-nested.md (TCG's SMAP emulation crashes dom0).
    const pin = GUEST_CPUS !== '' ? 'dom0_vcpus_pin' : '';
    const xenArgs = `console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 ${pin} loglvl=warning guest_loglvl=warning iommu=0 smap=0 smep=0 spec-ctrl=eager-fpu ${extra}`.replace(/ +/g, ' ').trim();
    const dom0Args = 'root=/dev/vda ro console=hvc0 loglevel=4 init=/sbin/mayfly-stub-init';
    const args = [
      '-M', 'q35', '-accel', process.env.MAYFLY_XEN_QEMU_ACCEL ?? 'tcg', '-cpu', cpu, '-smp', '2', '-m', String(memory),
      '-kernel', path.join(BASE, 'xen.elf'),
      '-append', xenArgs,
      '-initrd', `${path.join(BASE, 'vmlinuz')} ${dom0Args},${path.join(BASE, 'initrd.img')}`,
      // The base disk is shared by runs: snapshot=on sends this run's writes to a temp file.
      '-drive', `file=${path.join(BASE, 'dom0.img')},if=virtio,format=raw,cache=unsafe,snapshot=on`,
      '-drive', `file=${appImg},if=virtio,format=raw,cache=unsafe`,
      // One forwarder process per guest connection (the -tcp: form allows only one connection at a time).
      '-netdev', `user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:4222-cmd:${fs.realpathSync(process.execPath)} ${path.join(PROJECT_ROOT, 'dist', 'test', 'xen', 'tcp-pipe.js')} ${opts.natsPort}`,
      '-device', 'virtio-net-pci,netdev=n0',
      '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot', '-nodefaults',
    ];
    // setpriv: QEMU dies with the process that started it, whatever happens to it.
    const proc = spawn('nice', ['-n', '5', 'setpriv', '--pdeathsig', 'KILL', 'qemu-system-x86_64', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    h.proc = proc;
    h.exited = new Promise((r) => proc.once('exit', (code) => r(code)));
    const log = fs.createWriteStream(h.consoleLog);
    let partial = '';
    const onData = (d: Buffer) => {
      log.write(d);
      partial += d.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const i = line.indexOf('XENTEST ');
        if (i < 0) continue;
        try {
          h.reports.push(JSON.parse(line.slice(i + 8).trim()) as XenReport);
          for (const l of h.listeners.splice(0)) l();
        } catch {
          /* a garbled console line */
        }
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    return h;
  }

  report(check: string): XenReport | undefined {
    return this.reports.find((r) => r.check === check);
  }

  /** Waits for a report line, failing early when QEMU ends. */
  async waitFor(check: string, timeoutMs: number): Promise<XenReport> {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    void this.exited.then(() => (ended = true));
    for (;;) {
      const r = this.report(check);
      if (r) return r;
      if (ended) throw new Error(`the nested host ended before reporting "${check}" (console: ${this.consoleLog})`);
      if (Date.now() > deadline) throw new Error(`no "${check}" report within ${timeoutMs} ms (console: ${this.consoleLog})`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, 1000);
        this.listeners.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null && p.pid) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await this.exited;
    fs.rmSync(path.join(this.dir, 'app.img'), { force: true });
  }
}
