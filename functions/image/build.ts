/**
 * Tinyx-style guest image builder: a Debian cloud kernel (uncompressed vmlinux,
 * PVH entry) plus a minimal initramfs that holds exactly what one function VM
 * needs: a static busybox for /init, the host's node binary (stripped) with
 * exactly the shared libraries its ELF headers ask for, the guest agent, and the
 * four kernel modules of the virtio console channel.
 *
 * Images are content addressed: imageId = sha256 over the builder version, the
 * compression, the kernel package and the bytes of everything shipped. Layout:
 *   <cacheDir>/kernels/<pkg>/...           kernel.ts
 *   <cacheDir>/runtime/node-<ver>-<key>     stripped node, keyed by the source's stat
 *   <cacheDir>/hash-memo.json               sha256 per (path, size, mtime, inode)
 *   <cacheDir>/images/<imageId>/{vmlinux (hard link to the kernel cache), initrd.img, manifest.json}
 * Every directory/file appears by an atomic rename of a complete temp, so a crash
 * never leaves a half image that looks complete, and concurrent builders of the
 * same image just race to an identical result.
 *
 * The heavy steps (hashing, cpio + compression) run in a piscina pool. Piscina
 * always loads the COMPILED worker (dist/functions/image/image-worker.js): from
 * dist it is the sibling of this file; when this module is imported from its .ts
 * source (vitest), the worker is looked up at <project>/dist/functions/image/, so
 * run `npx tsc -p tsconfig.json` first (npm test does, in pretest).
 */
import { existsSync } from 'node:fs';
import { chmod, copyFile, link, mkdir, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { cpioSize, normalizeEntries, type CpioEntry } from './cpio.js';
import { resolveLibraryClosure } from './deps.js';
import { readElf } from './elf.js';
import type { WriteImageResult, WriteImageTask } from './image-worker.js';
import { ensureKernel, run, type CachedKernel } from './kernel.js';
import { buildKernel, defaultTinyxConfig, formatKernelProgress, type BuiltKernel, type KernelConfigInput } from './kernel-build.js';
import { discoverRuntime, recipeFor } from './runtime-deps.js';
import { isErrno, pidAlive, sha256, tmpSuffix } from './cache-util.js';

/** Bump when the image layout or /init changes in a way the inputs do not capture. */
export const BUILDER_VERSION = '1';
/** The node initramfs needs at least this much guest RAM (unpacked rootfs + kernel + node heap). */
export const MIN_GUEST_MEMORY_MIB = 320;
/** Environment of the agent inside the guest (set by /init). */
export const GUEST_ENV: Readonly<Record<string, string>> = {
  PATH: '/usr/bin:/bin',
  HOME: '/tmp',
  NODE_ENV: 'production',
  MAYFLY_CHANNEL_FD: '3',
};
export const GUEST_AGENT_PATH = '/mayfly/functions/agent/agent.js';

export type Compression = 'lz4' | 'gzip' | 'zstd' | 'none';

/**
 * Which guest kernel an image boots:
 *  - 'debian': Debian's cloud kernel + the virtio console modules (the default);
 *  - 'tinyx': a kernel built from linux-source-6.1 (kernel-build.ts): the shipped
 *    minimized config infra/kernel/tinyx-microvm.config, or `tinyxConfig`;
 *  - { tinyx: BuiltKernel }: an already built tinyx kernel (the elimination loop).
 */
export type KernelChoice = 'debian' | 'tinyx' | { tinyx: BuiltKernel };

export interface ImageProgress {
  step: string;
  detail?: string;
  done?: number;
  total?: number;
}

export interface GuestImage {
  imageId: string;
  runtime: 'node';
  kernelPath: string;
  initrdPath: string;
  kernelRelease: string;
  compression: Compression;
  sizes: { kernelBytes: number; initrdBytes: number; rootfsBytes: number };
  files: string[];
  builtNow: boolean;
  /** 'debian' or 'tinyx' (absent in manifests of older builders: 'debian'). */
  kernelKind?: 'debian' | 'tinyx';
  /** Extra runtimes shipped next to node (recipe references, e.g. `python3`, `binary:/path`). */
  runtimes?: string[];
  /** Kernel command line arguments this image's kernel needs. */
  kernelArgs?: string[];
  /** Machine options this image's kernel needs (QEMU microvm: `acpi=off` for a kernel without ACPI). */
  machineOptions?: string[];
}

export interface EnsureImageOptions {
  runtime?: 'node';
  cacheDir: string;
  agentDir: string;
  compression?: Compression;
  onProgress?: (p: ImageProgress) => void;
  /** Guest kernel (default 'debian'). */
  kernel?: KernelChoice;
  /** With kernel 'tinyx': the config to build instead of the shipped one. */
  tinyxConfig?: KernelConfigInput;
  /**
   * Extra runtimes to ship next to node and the agent: recipe references
   * (runtime-deps.ts `recipeFor`: `python3`, `binary:/abs/path`). Their files
   * (ELF closure + traced start-up files) land at the paths the runtime uses.
   */
  runtimes?: string[];
}

interface Manifest {
  imageId: string;
  builderVersion: string;
  runtime: 'node';
  runtimes?: string[];
  compression: Compression;
  kernel: {
    packageName: string;
    packageVersion: string;
    release: string;
    sha256: string;
    kind?: 'debian' | 'tinyx';
    bootArgs?: string[];
    machineOptions?: string[];
  };
  sizes: GuestImage['sizes'];
  initrdSha256: string;
  files: string[];
  inputs: Array<{ path: string; mode: string; sha256?: string; bytes?: number }>;
  createdAt: string;
  buildMs: number;
}

// ---------------------------------------------------------------------------
// /init

/** The guest's /init: mount, load the console modules, open the channel, exec the agent. */
export function initScript(modules: string[], opts: { end?: 'poweroff' | 'reboot' } = {}): string {
  // A kernel without ACPI cannot power off (poweroff only halts the CPU and the VM
  // would hang until its boot timeout); QEMU runs with -no-reboot, so a reboot ends it.
  const end = opts.end === 'reboot' ? 'reboot' : 'poweroff';
  const env = Object.entries(GUEST_ENV)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `#!/bin/busybox sh
# Mayfly guest init (image builder v${BUILDER_VERSION}). PID 1 until it execs the agent.
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t tmpfs -o mode=1777 tmp /tmp
${modules.length ? `for m in ${modules.join(' ')}; do /bin/busybox insmod /lib/modules/$m.ko; done\n` : '# no modules: the kernel has the virtio console built in\n'}# the console device can appear late under load: wait for it, bounded (10 s)
i=0; while [ ! -e /dev/hvc0 ] && [ $i -lt 1000 ]; do i=$((i+1)); /bin/busybox usleep 10000; done
if [ ! -e /dev/hvc0 ]; then
  # <3> = KERN_ERR: still printed on the console with quiet
  echo "<3>mayfly-init: /dev/hvc0 did not appear within 10 s, ${end === 'poweroff' ? 'powering off' : 'ending the VM (reboot)'}" > /dev/kmsg
  /bin/busybox ${end} -f
  exit 1
fi
exec 3<>/dev/hvc0
/bin/busybox stty -F /dev/hvc0 raw -echo
export ${env}
cd /
exec /usr/bin/node ${GUEST_AGENT_PATH}
`;
}

// ---------------------------------------------------------------------------
// helpers


/** Removes `.tmp-*-<pid>-<rand>` leftovers of builders that died (a crash mid-build). */
async function sweepStaleTemps(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^\.tmp-.*-(\d+)-[0-9a-f]{8}(?:\.\w+)?$/.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid !== process.pid && !pidAlive(pid)) await rm(path.join(dir, n), { recursive: true, force: true });
  }
}

/** Writes a file atomically (temp name + rename). */
async function writeFileAtomic(file: string, data: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.tmp-${path.basename(file)}-${tmpSuffix()}`);
  await writeFile(tmp, data);
  await rename(tmp, file);
}

/** The compiled worker file piscina loads (see the header comment). */
export function workerFile(): URL {
  const here = fileURLToPath(import.meta.url);
  const sibling = new URL('./image-worker.js', import.meta.url);
  if (here.endsWith('.js') && existsSync(sibling)) return sibling;
  // Imported from the .ts source: functions/image/build.ts -> <root>/dist/functions/image/.
  const root = path.resolve(path.dirname(here), '..', '..');
  const compiled = path.join(root, 'dist', 'functions', 'image', 'image-worker.js');
  if (!existsSync(compiled)) {
    throw new Error(`image builder worker ${compiled} is missing: compile first (npx tsc -p tsconfig.json)`);
  }
  return pathToFileURL(compiled);
}

// ---------------------------------------------------------------------------
// inputs

/** The host's node binary, stripped into the cache (`strip -o`) when `strip` exists. */
async function ensureRuntimeBinary(cacheDir: string, progress: (p: ImageProgress) => void): Promise<string> {
  const src = await realpath(process.execPath);
  const st = await stat(src, { bigint: true });
  const key = sha256(`${src}\0${st.size}\0${st.mtimeNs}\0${st.ino}`).slice(0, 16);
  const out = path.join(cacheDir, 'runtime', `node-${process.version}-${key}`);
  if (existsSync(out)) return out;
  await mkdir(path.dirname(out), { recursive: true });
  await sweepStaleTemps(path.dirname(out));
  const tmp = path.join(path.dirname(out), `.tmp-node-${tmpSuffix()}`);
  progress({ step: 'strip-runtime', detail: `strip -o ${path.basename(out)} ${src}` });
  try {
    const r = await run('strip', ['-o', tmp, src], { timeoutMs: 5 * 60_000 });
    if (r.code !== 0) {
      progress({ step: 'strip-runtime', detail: `strip failed (${r.stderr.trim()}): shipping ${src} unstripped` });
      return src;
    }
    await chmod(tmp, 0o755);
    await rename(tmp, out);
    return out;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) {
      progress({ step: 'strip-runtime', detail: `no strip on this host: shipping ${src} unstripped` });
      return src;
    }
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Debian's busybox-static, checked to be static (no PT_INTERP). */
async function findStaticBusybox(): Promise<string> {
  const tried: string[] = [];
  for (const p of ['/bin/busybox', '/usr/bin/busybox', '/usr/lib/initramfs-tools/bin/busybox']) {
    if (!existsSync(p)) continue;
    const real = await realpath(p);
    const elf = await readElf(real);
    if (!elf.interp) return real;
    tried.push(`${p} (dynamically linked: ${elf.interp})`);
  }
  throw new Error(
    `no statically linked busybox found${tried.length ? `: ${tried.join(', ')}` : ''}; install Debian's busybox-static`,
  );
}

/** dist/functions/agent/*.js and dist/contracts/frame.js, as guest path -> host path. */
async function agentFiles(agentDir: string): Promise<Array<{ guestPath: string; hostPath: string }>> {
  const dir = path.resolve(agentDir);
  const agentJs = path.join(dir, 'functions', 'agent');
  let names: string[];
  try {
    names = (await readdir(agentJs)).filter((n) => n.endsWith('.js')).sort();
  } catch {
    throw new Error(`agentDir ${dir} has no functions/agent/ (pass the compiled dist/ folder)`);
  }
  if (!names.includes('agent.js')) throw new Error(`${agentJs}/agent.js is missing (compile the agent first)`);
  const frame = path.join(dir, 'contracts', 'frame.js');
  if (!existsSync(frame)) throw new Error(`${frame} is missing (compile contracts/frame.ts)`);
  return [
    ...names.map((n) => ({ guestPath: `/mayfly/functions/agent/${n}`, hostPath: path.join(agentJs, n) })),
    { guestPath: '/mayfly/contracts/frame.js', hostPath: frame },
  ];
}

// ---------------------------------------------------------------------------
// hashing (memoised by stat, computed in the pool)

interface StatKey {
  hostPath: string;
  size: number;
  key: string;
}

async function statKey(hostPath: string): Promise<StatKey> {
  const st = await stat(hostPath, { bigint: true });
  if (!st.isFile()) throw new Error(`${hostPath} is not a regular file`);
  return { hostPath, size: Number(st.size), key: `${hostPath}\0${st.size}\0${st.mtimeNs}\0${st.ino}` };
}

async function hashAll(
  cacheDir: string,
  pool: () => Piscina,
  files: StatKey[],
  progress: (p: ImageProgress) => void,
): Promise<Map<string, string>> {
  const memoPath = path.join(cacheDir, 'hash-memo.json');
  let memo: Record<string, string> = {};
  try {
    const parsed = JSON.parse(await readFile(memoPath, 'utf8')) as { v: number; entries: Record<string, string> };
    if (parsed.v === 1) memo = parsed.entries;
  } catch {
    /* no memo yet */
  }
  const out = new Map<string, string>();
  const todo = files.filter((f) => {
    const hit = memo[f.key];
    if (hit) out.set(f.hostPath, hit);
    return !hit;
  });
  const totalBytes = todo.reduce((n, f) => n + f.size, 0);
  let doneBytes = 0;
  progress({
    step: 'hash',
    detail: `${files.length} inputs, ${todo.length} to hash (${files.length - todo.length} memoised)`,
    done: 0,
    total: totalBytes,
  });
  if (todo.length === 0) return out;
  const unique = [...new Map(todo.map((f) => [f.hostPath, f])).values()];
  // Biggest first so the node binary does not end up last on one thread.
  unique.sort((a, b) => b.size - a.size);
  await Promise.all(
    unique.map(async (f) => {
      const r = (await pool().run({ path: f.hostPath }, { name: 'hashFile' })) as { sha256: string; bytes: number };
      if (r.bytes !== f.size) throw new Error(`${f.hostPath} changed while hashing`);
      out.set(f.hostPath, r.sha256);
      memo[f.key] = r.sha256;
      doneBytes += f.size;
      // One line per big input and a final one; small files would only add noise.
      if (f.size >= 1 << 20 || doneBytes === totalBytes) {
        progress({ step: 'hash', detail: path.basename(f.hostPath), done: doneBytes, total: totalBytes });
      }
    }),
  );
  // Keep the memo bounded: the current inputs plus the most recent others.
  const current = new Set(files.map((f) => f.key));
  const others = Object.keys(memo).filter((k) => !current.has(k));
  const kept = Object.fromEntries(
    [...others.slice(-256), ...current].filter((k) => memo[k]).map((k) => [k, memo[k]!]),
  );
  await mkdir(cacheDir, { recursive: true });
  await writeFileAtomic(memoPath, JSON.stringify({ v: 1, entries: kept }) + '\n');
  return out;
}

// ---------------------------------------------------------------------------
// image cache

async function loadImage(dir: string): Promise<Manifest | undefined> {
  try {
    const m = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    if ((await stat(path.join(dir, 'initrd.img'))).size !== m.sizes.initrdBytes) return undefined;
    if ((await stat(path.join(dir, 'vmlinux'))).size !== m.sizes.kernelBytes) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

function toGuestImage(dir: string, m: Manifest, builtNow: boolean): GuestImage {
  return {
    imageId: m.imageId,
    runtime: m.runtime,
    kernelPath: path.join(dir, 'vmlinux'),
    initrdPath: path.join(dir, 'initrd.img'),
    kernelRelease: m.kernel.release,
    compression: m.compression,
    sizes: { ...m.sizes },
    files: [...m.files],
    runtimes: [...(m.runtimes ?? [])],
    builtNow,
    kernelKind: m.kernel.kind ?? 'debian',
    kernelArgs: [...(m.kernel.bootArgs ?? [])],
    machineOptions: [...(m.kernel.machineOptions ?? [])],
  };
}

/** A tinyx kernel in the shape the image builder uses for Debian's (no modules: everything is built in). */
function tinyxAsCached(k: BuiltKernel): CachedKernel {
  return {
    packageName: k.id,
    packageVersion: k.sourceVersion,
    release: k.release,
    vmlinuxPath: k.vmlinuxPath,
    modules: [],
    source: k.cached ? 'cache' : 'download',
  };
}

/**
 * Initramfs files by content: an initrd is fully determined by the builder
 * version, the compression and its inputs (the kernel is not in it), so images
 * that differ only in their kernel (the tinyx elimination loop) share one
 * initrd instead of compressing ~90 MB again. <cacheDir>/initrds/<key>.img.
 */
async function reuseInitrd(
  cacheDir: string,
  key: string,
  dest: string,
): Promise<{ rootfsBytes: number; initrdBytes: number; sha256: string } | undefined> {
  const base = path.join(cacheDir, 'initrds', key);
  try {
    const meta = JSON.parse(await readFile(`${base}.json`, 'utf8')) as { rootfsBytes: number; initrdBytes: number; sha256: string };
    if ((await stat(`${base}.img`)).size !== meta.initrdBytes) return undefined;
    try {
      await link(`${base}.img`, dest);
    } catch {
      await copyFile(`${base}.img`, dest);
    }
    return meta;
  } catch {
    return undefined;
  }
}

async function rememberInitrd(
  cacheDir: string,
  key: string,
  src: string,
  meta: { rootfsBytes: number; initrdBytes: number; sha256: string },
): Promise<void> {
  const dir = path.join(cacheDir, 'initrds');
  try {
    await mkdir(dir, { recursive: true });
    await sweepStaleTemps(dir);
    const tmp = path.join(dir, `.tmp-${key}-${tmpSuffix()}`);
    try {
      await link(src, `${tmp}.img`);
    } catch {
      await copyFile(src, `${tmp}.img`);
    }
    await writeFile(`${tmp}.json`, JSON.stringify(meta) + '\n');
    await rename(`${tmp}.img`, path.join(dir, `${key}.img`));
    await rename(`${tmp}.json`, path.join(dir, `${key}.json`));
  } catch {
    /* an optimisation only */
  }
}

function modeString(e: CpioEntry): string {
  return e.type === 'symlink' ? '0777' : e.mode.toString(8).padStart(4, '0');
}

// ---------------------------------------------------------------------------
// main entry

/**
 * Returns the guest image for the current inputs, building it when the cache
 * does not hold it. Safe to call concurrently from several processes.
 */
export async function ensureImage(opts: EnsureImageOptions): Promise<GuestImage> {
  const started = Date.now();
  const runtime = opts.runtime ?? 'node';
  if (runtime !== 'node') throw new Error(`unsupported runtime ${String(runtime)}`);
  const compression: Compression = opts.compression ?? 'lz4';
  if (!['lz4', 'gzip', 'zstd', 'none'].includes(compression)) throw new Error(`unsupported compression ${compression}`);
  const kernelChoice: KernelChoice = opts.kernel ?? 'debian';
  const kernelKind: 'debian' | 'tinyx' = kernelChoice === 'debian' ? 'debian' : 'tinyx';
  const cacheDir = path.resolve(opts.cacheDir);
  const progress = (p: ImageProgress): void => {
    try {
      opts.onProgress?.(p);
    } catch {
      /* a failing progress printer must not fail the build */
    }
  };
  await mkdir(cacheDir, { recursive: true });

  // 1. kernel + modules (Debian), or a tinyx kernel with everything built in
  let kernel: CachedKernel;
  let bootArgs: string[] = [];
  let machineOptions: string[] = [];
  if (kernelChoice === 'debian') {
    kernel = await ensureKernel(cacheDir, (step, detail) => progress({ step, ...(detail ? { detail } : {}) }));
  } else {
    const built =
      typeof kernelChoice === 'object'
        ? kernelChoice.tinyx
        : await buildKernel({
            cacheDir,
            config: opts.tinyxConfig ?? defaultTinyxConfig(),
            onProgress: (p) => progress({ step: 'tinyx-kernel', detail: formatKernelProgress(p).replace(/^kernel: /, '') }),
          });
    kernel = tinyxAsCached(built);
    bootArgs = built.bootArgs;
    machineOptions = built.machineOptions;
  }

  // 2. runtime, its libraries, busybox, agent
  const nodeBinary = await ensureRuntimeBinary(cacheDir, progress);
  progress({ step: 'resolve-libraries', detail: process.execPath });
  const closure = await resolveLibraryClosure(process.execPath);
  const busybox = await findStaticBusybox();
  const agent = await agentFiles(opts.agentDir);
  progress({
    step: 'resolve-libraries',
    detail: [closure.interpreter?.guestPath, ...closure.libraries.map((l) => l.guestPath)].filter(Boolean).join(' '),
  });

  const fileInputs: Array<{ guestPath: string; hostPath: string; mode: number }> = [
    { guestPath: '/bin/busybox', hostPath: busybox, mode: 0o755 },
    { guestPath: '/usr/bin/node', hostPath: nodeBinary, mode: 0o755 },
    ...(closure.interpreter ? [{ ...closure.interpreter, mode: 0o755 }] : []),
    ...closure.libraries.map((l) => ({ guestPath: l.guestPath, hostPath: l.hostPath, mode: 0o755 })),
    ...kernel.modules.map((m) => ({ guestPath: `/lib/modules/${m.name}.ko`, hostPath: m.hostPath, mode: 0o644 })),
    ...agent.map((a) => ({ ...a, mode: 0o644 })),
  ];
  // 2b. extra runtimes: what each recipe's discovery found, minus what is already there (libc, ...)
  const runtimes = [...new Set(opts.runtimes ?? [])];
  for (const ref of runtimes) {
    const found = await discoverRuntime(recipeFor(ref));
    progress({ step: 'runtime', detail: `${ref}: ${found.files.length} files, ${(found.totalBytes / 1048576).toFixed(1)} MiB${found.traced ? '' : ' (ELF closure only: strace missing)'}` });
    const have = new Set(fileInputs.map((f) => f.guestPath));
    for (const f of found.files) {
      if (have.has(f.guestPath)) continue;
      const executable = f.reason === 'binary' || f.reason === 'interpreter' || ((await stat(f.hostPath)).mode & 0o111) !== 0;
      fileInputs.push({ guestPath: f.guestPath, hostPath: f.hostPath, mode: executable ? 0o755 : 0o644 });
    }
  }
  const stats = new Map<string, StatKey>();
  for (const f of [...fileInputs.map((i) => i.hostPath), kernel.vmlinuxPath]) {
    if (!stats.has(f)) stats.set(f, await statKey(f));
  }

  const entries: CpioEntry[] = [
    ...['/dev', '/proc', '/sys', '/etc', '/var/task'].map((p): CpioEntry => ({ type: 'dir', path: p, mode: 0o755 })),
    { type: 'dir', path: '/tmp', mode: 0o1777 },
    // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    { type: 'char', path: '/dev/console', mode: 0o600, rdevMajor: 5, rdevMinor: 1 },
    { type: 'file', path: '/init', mode: 0o755, source: { kind: 'text', text: initScript(kernel.modules.map((m) => m.name), machineOptions.includes('acpi=off') ? { end: 'reboot' } : {}) } },
    { type: 'file', path: '/mayfly/package.json', mode: 0o644, source: { kind: 'text', text: '{"type":"module"}\n' } },
    ...fileInputs.map(
      (f): CpioEntry => ({
        type: 'file',
        path: f.guestPath,
        mode: f.mode,
        source: { kind: 'file', hostPath: f.hostPath, size: stats.get(f.hostPath)!.size },
      }),
    ),
  ];
  const normalized = normalizeEntries(entries);

  // 3. content hash (in the pool, created only when there is work for it)
  let piscina: Piscina | undefined;
  const pool = (): Piscina =>
    (piscina ??= new Piscina({
      filename: workerFile().href,
      minThreads: 1,
      maxThreads: Math.max(1, Math.min(2, os.availableParallelism())),
      idleTimeout: 2_000,
    }));
  try {
    const hashes = await hashAll(cacheDir, pool, [...stats.values()], progress);
    const inputs: Manifest['inputs'] = normalized.map((e) => {
      const base = { path: `/${e.path}`, mode: modeString(e) };
      if (e.type === 'file' && e.source.kind === 'file') {
        return { ...base, sha256: hashes.get(e.source.hostPath)!, bytes: e.source.size };
      }
      if (e.type === 'file' && e.source.kind === 'text') {
        return { ...base, sha256: sha256(e.source.text), bytes: Buffer.byteLength(e.source.text) };
      }
      if (e.type === 'char') return { ...base, mode: `${base.mode} c ${e.rdevMajor}:${e.rdevMinor}` };
      return base;
    });
    const vmlinuxSha = hashes.get(kernel.vmlinuxPath)!;
    const imageId = sha256(
      JSON.stringify({
        builder: BUILDER_VERSION,
        runtime,
        compression,
        kernelPackage: kernel.packageName,
        vmlinux: vmlinuxSha,
        // Only for tinyx / extra runtimes, so plain Debian images keep the ids they had.
        ...(kernelKind === 'tinyx' ? { kernelKind, bootArgs, machineOptions } : {}),
        ...(runtimes.length ? { runtimes } : {}),
        inputs,
      }),
    ).slice(0, 32);
    const initrdKey = sha256(JSON.stringify({ builder: BUILDER_VERSION, compression, inputs })).slice(0, 32);

    const imagesDir = path.join(cacheDir, 'images');
    const finalDir = path.join(imagesDir, imageId);
    const cached = await loadImage(finalDir);
    if (cached) {
      progress({ step: 'done', detail: `image ${imageId} (cached, ${Date.now() - started} ms)` });
      return toGuestImage(finalDir, cached, false);
    }

    // 4. build into a temp dir, then rename into place
    await mkdir(imagesDir, { recursive: true });
    await sweepStaleTemps(imagesDir);
    const tmp = path.join(imagesDir, `.tmp-${imageId}-${tmpSuffix()}`);
    await mkdir(tmp);
    try {
      const kernelBytes = stats.get(kernel.vmlinuxPath)!.size;
      try {
        await link(kernel.vmlinuxPath, path.join(tmp, 'vmlinux'));
      } catch {
        await copyFile(kernel.vmlinuxPath, path.join(tmp, 'vmlinux'));
      }
      const total = cpioSize(normalized);
      let result: WriteImageResult | undefined = await reuseInitrd(cacheDir, initrdKey, path.join(tmp, 'initrd.img'));
      if (result) {
        progress({ step: 'write-cpio', detail: `initrd ${initrdKey} reused (same inputs, another kernel)` });
      } else {
        progress({ step: 'write-cpio', detail: `${normalized.length} entries, ${compression}`, done: 0, total });
        const channel = new MessageChannel();
        channel.port1.on('message', (m: { done: number; total: number }) =>
          progress({ step: 'write-cpio', detail: compression, done: m.done, total: m.total }),
        );
        try {
          const task: WriteImageTask = {
            entries: normalized,
            outPath: path.join(tmp, 'initrd.img'),
            compression,
            port: channel.port2,
          };
          result = (await pool().run(task, { name: 'writeImage', transferList: [channel.port2] })) as WriteImageResult;
        } finally {
          channel.port1.close();
        }
        await rememberInitrd(cacheDir, initrdKey, path.join(tmp, 'initrd.img'), result);
      }
      progress({
        step: 'compress',
        detail: `${compression}: ${result.rootfsBytes} -> ${result.initrdBytes} bytes`,
        done: result.initrdBytes,
        total: result.rootfsBytes,
      });
      const manifest: Manifest = {
        imageId,
        builderVersion: BUILDER_VERSION,
        runtime,
        ...(runtimes.length ? { runtimes } : {}),
        compression,
        kernel: {
          packageName: kernel.packageName,
          packageVersion: kernel.packageVersion,
          release: kernel.release,
          sha256: vmlinuxSha,
          ...(kernelKind === 'tinyx' ? { kind: kernelKind, bootArgs, machineOptions } : {}),
        },
        sizes: { kernelBytes, initrdBytes: result.initrdBytes, rootfsBytes: result.rootfsBytes },
        initrdSha256: result.sha256,
        files: normalized.map((e) => `/${e.path}`),
        inputs,
        createdAt: new Date().toISOString(),
        buildMs: Date.now() - started,
      };
      await writeFile(path.join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      let winner = manifest;
      try {
        await rename(tmp, finalDir);
      } catch (err) {
        if (!isErrno(err, 'ENOTEMPTY', 'EEXIST')) throw err;
        // Another builder renamed the same image into place first: use theirs.
        const theirs = await loadImage(finalDir);
        if (!theirs) throw new Error(`${finalDir} exists but is not a complete image`);
        winner = theirs;
      }
      progress({ step: 'done', detail: `image ${imageId} built in ${Date.now() - started} ms` });
      return toGuestImage(finalDir, winner, true);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  } finally {
    await piscina?.destroy();
  }
}

// ---------------------------------------------------------------------------
// reporting (CLI)

function mib(n: number): string {
  return (n / (1024 * 1024)).toFixed(1);
}

/** One line per progress event, e.g. "image: write-cpio lz4 48.0/93.2 MiB (51%)". */
export function formatProgress(p: ImageProgress): string {
  let line = `image: ${p.step}`;
  if (p.detail) line += ` ${p.detail}`;
  if (p.total !== undefined && p.total > 0 && p.done !== undefined) {
    line += ` ${mib(p.done)}/${mib(p.total)} MiB (${Math.round((100 * p.done) / p.total)}%)`;
  }
  return line;
}

/** A short human report of a built or cached image. */
export function formatImageReport(img: GuestImage): string {
  const ratio = img.sizes.rootfsBytes ? ((100 * img.sizes.initrdBytes) / img.sizes.rootfsBytes).toFixed(0) : '?';
  return [
    `image ${img.imageId} (${img.builtNow ? 'built now' : 'cached'})`,
    `  kernel  ${img.kernelRelease} (${img.kernelKind ?? 'debian'})  ${mib(img.sizes.kernelBytes)} MiB  ${img.kernelPath}${img.kernelArgs?.length ? `  args: ${img.kernelArgs.join(' ')}` : ''}${img.machineOptions?.length ? `  machine: ${img.machineOptions.join(',')}` : ''}`,
    `  initrd  ${img.compression}  ${mib(img.sizes.initrdBytes)} MiB (${ratio}% of ${mib(img.sizes.rootfsBytes)} MiB rootfs)  ${img.initrdPath}`,
    `  files   ${img.files.length} entries; guest needs >= ${MIN_GUEST_MEMORY_MIB} MiB RAM`,
  ].join('\n');
}
