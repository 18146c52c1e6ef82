/**
 * Tinyx kernel builder: a guest kernel compiled from Debian's `linux-source-6.1`
 * (the tarball the apt package puts in /usr/src), starting at `make tinyconfig`
 * plus small fragments for the target (infra/kernel/*.fragment), or from a full
 * config (the shipped, minimized infra/kernel/tinyx-microvm.config).
 *
 * What QEMU boots is the uncompressed `vmlinux` (PVH entry). Everything lives
 * under the cache directory (MAYFLY_CACHE_DIR), outside the checkout, so a
 * fresh clone on the same machine reuses it:
 *
 *   <cacheDir>/kernel-build/<pkg>_<version>/src     the extracted source (read only)
 *   <cacheDir>/kernel-build/<pkg>_<version>/out     the O= build tree, kept: rebuilds are incremental
 *   <cacheDir>/kernel-build/<pkg>_<version>/.lock   one make at a time per tree
 *   <cacheDir>/tinyx-kernels/<version>-<hash16>/    {vmlinux, config, kernel.json}: the content-addressed result
 *   <cacheDir>/tinyx-kernels/resolved/<sha>.json    memo: inputs (source, fragments/config, compiler) -> final .config
 *
 * The cache key is the source package version plus the sha256 of the final
 * `.config` (after `make olddefconfig`), so two requests that resolve to the
 * same config share one kernel, and a cache hit costs a file read and a stat.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readElf } from './elf.js';
import { run } from './kernel.js';
import { pidAlive, sha256, tmpSuffix } from './cache-util.js';

/** Debian's source package of the guest kernel and where it puts the tarball. */
export const KERNEL_SOURCE_PACKAGE = 'linux-source-6.1';
export const KERNEL_SOURCE_TARBALL = `/usr/src/${KERNEL_SOURCE_PACKAGE}.tar.xz`;

/** infra/kernel of this checkout (this file is functions/image/kernel-build.ts or dist/functions/image/kernel-build.js). */
export const KERNEL_INFRA_DIR = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  let root = path.resolve(here, '..', '..');
  if (path.basename(root) === 'dist') root = path.dirname(root);
  return path.join(root, 'infra', 'kernel');
})();
/** The base fragment applied on top of tinyconfig for QEMU microvm guests. */
export const MICROVM_FRAGMENT = path.join(KERNEL_INFRA_DIR, 'tinyx-microvm.fragment');
/** Xen PVH/PV guest options, applied after MICROVM_FRAGMENT (hvc_xen console instead of virtio). */
export const XEN_FRAGMENT = path.join(KERNEL_INFRA_DIR, 'tinyx-xen.fragment');
/** The shipped, minimized config (output of `mayfly image minimize-kernel`). */
export const SHIPPED_CONFIG = path.join(KERNEL_INFRA_DIR, 'tinyx-microvm.config');

/**
 * How a kernel without ACPI finds its virtio-mmio device on QEMU 7.2 microvm
 * (measured, see the README): with ACPI on (microvm's default) the transports
 * are described only in ACPI tables and their interrupts are routed through a
 * second IOAPIC (`ioapic2`, GSI 24+) that the MP table does not list, so a
 * kernel without ACPI registers the device from a `virtio_mmio.device=` argument
 * but never gets its interrupts and /dev/hvc0 never appears. With `acpi=off`
 * QEMU drops ioapic2 and appends `virtio_mmio.device=512@0xfeb00e00:12` to the
 * command line itself. So such a kernel needs the machine option, no argument.
 */
export const MICROVM_NO_ACPI_MACHINE_OPTION = 'acpi=off';

export interface KernelBuildProgress {
  step: string;
  detail?: string;
}

export type KernelConfigInput =
  /** `make tinyconfig` + these fragments (files, in order), then olddefconfig. */
  | { kind: 'tinyconfig'; fragments: string[] }
  /** A full config (file or text), completed with olddefconfig. */
  | { kind: 'config'; path?: string; text?: string };

export interface KernelBuildOptions {
  cacheDir: string;
  config: KernelConfigInput;
  onProgress?: (p: KernelBuildProgress) => void;
  /** make -j (default 2: the machine is shared). */
  jobs?: number;
  /** nice level of make (default 10). */
  nice?: number;
  /** Overrides KERNEL_SOURCE_TARBALL (tests). */
  tarball?: string;
}

export interface BuiltKernel {
  /** `tinyx:<pkg>_<version>-<hash16>`: stable name of this exact kernel. */
  id: string;
  sourcePackage: string;
  sourceVersion: string;
  release: string;
  configHash: string;
  vmlinuxPath: string;
  configPath: string;
  vmlinuxBytes: number;
  /**
   * Bytes QEMU copies into guest RAM (sum of the PT_LOAD segments' file sizes).
   * The file itself is padded to 2 MiB segment alignment, so its size hides
   * most differences between configs; this does not.
   */
  loadBytes: number;
  /** Arguments the kernel needs on its command line (none so far; derived from the config). */
  bootArgs: string[];
  /** QEMU microvm options the kernel needs (`acpi=off` without CONFIG_ACPI; derived from the config). */
  machineOptions: string[];
  /** Wall time of the build that made it (0 when unknown). */
  buildMs: number;
  /** True when this call found it in the cache. */
  cached: boolean;
  /** What this call spent, cache hit or not. */
  elapsedMs: number;
}

interface KernelMetaFile {
  id: string;
  sourcePackage: string;
  sourceVersion: string;
  release: string;
  configHash: string;
  vmlinuxBytes: number;
  buildMs: number;
  objectsCompiled: number;
  createdAt: string;
}

// ---------------------------------------------------------------------------
// Kconfig text

/** `CONFIG_X=value` lines and `# CONFIG_X is not set` (as 'n'), keyed by name with the CONFIG_ prefix. */
export function parseKconfig(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    let m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m) {
      out.set(m[1]!, m[2]!);
      continue;
    }
    m = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (m) out.set(m[1]!, 'n');
  }
  return out;
}

/** `AIO` or `CONFIG_AIO` -> `CONFIG_AIO`. */
export function optionName(name: string): string {
  const n = name.trim().replace(/=.*$/, '');
  if (!/^(CONFIG_)?[A-Za-z0-9_]+$/.test(n)) throw new Error(`not a Kconfig option name: "${name}"`);
  return n.startsWith('CONFIG_') ? n : `CONFIG_${n}`;
}

/** The value of an option in a config ('n' when absent or not set). */
export function optionValue(config: string | Map<string, string>, name: string): string {
  const map = typeof config === 'string' ? parseKconfig(config) : config;
  return map.get(optionName(name)) ?? 'n';
}

/**
 * Sets options in a config text: an existing line is replaced in place, a new
 * one is appended. 'n' writes `# CONFIG_X is not set`.
 */
export function setOptions(text: string, values: Record<string, string>): string {
  const want = new Map(Object.entries(values).map(([k, v]) => [optionName(k), v]));
  const line = (k: string, v: string) => (v === 'n' ? `# ${k} is not set` : `${k}=${v}`);
  const lines = text.split('\n');
  const done = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const m = /^(?:# )?(CONFIG_[A-Za-z0-9_]+)(?:=| is not set$)/.exec(lines[i]!);
    if (m && want.has(m[1]!)) {
      lines[i] = line(m[1]!, want.get(m[1]!)!);
      done.add(m[1]!);
    }
  }
  const tail = [...want].filter(([k]) => !done.has(k)).map(([k, v]) => line(k, v));
  if (tail.length) {
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    lines.push(...tail, '');
  }
  return lines.join('\n');
}

/**
 * The config's identity: its option lines in order (comments, blank lines and the
 * header with the generation date dropped). The compiler is part of it
 * (CONFIG_CC_VERSION_TEXT), as it should be.
 */
export function normalizeConfig(text: string): string {
  return (
    text
      .split('\n')
      .filter((l) => /^CONFIG_[A-Za-z0-9_]+=/.test(l) || /^# CONFIG_[A-Za-z0-9_]+ is not set$/.test(l))
      .join('\n') + '\n'
  );
}

export function configHash(text: string): string {
  return sha256(normalizeConfig(text));
}

/** Options whose value differs between two configs: name -> [before, after]. */
export function diffConfigs(before: string, after: string): Map<string, [string, string]> {
  const a = parseKconfig(before);
  const b = parseKconfig(after);
  const out = new Map<string, [string, string]>();
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const va = a.get(k) ?? 'n';
    const vb = b.get(k) ?? 'n';
    if (va !== vb) out.set(k, [va, vb]);
  }
  return out;
}

/** Fragment lines whose value the final config does not have (unmet dependencies, typos). */
export function fragmentMismatches(fragmentText: string, finalConfig: string): string[] {
  const final = parseKconfig(finalConfig);
  const out: string[] = [];
  for (const [k, v] of parseKconfig(fragmentText)) {
    const got = final.get(k) ?? 'n';
    if (got !== v) out.push(`${k}: wanted ${v}, got ${got}`);
  }
  return out;
}

/** What a kernel of this config needs from QEMU microvm: machine options and command line arguments. */
export function microvmNeeds(config: string): { machineOptions: string[]; bootArgs: string[] } {
  const c = parseKconfig(config);
  const on = (k: string) => (c.get(k) ?? 'n') !== 'n';
  return { machineOptions: on('CONFIG_ACPI') ? [] : [MICROVM_NO_ACPI_MACHINE_OPTION], bootArgs: [] };
}

// ---------------------------------------------------------------------------
// helpers


function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export interface KernelSource {
  packageName: string;
  version: string;
  tarball: string;
}

/** The installed linux-source package and its tarball; a clear error when it is missing. */
export async function findKernelSource(tarball = KERNEL_SOURCE_TARBALL): Promise<KernelSource> {
  if (!existsSync(tarball)) {
    throw new Error(
      `${tarball} is missing: install Debian's ${KERNEL_SOURCE_PACKAGE} (apt-get install ${KERNEL_SOURCE_PACKAGE} build-essential bc bison flex libelf-dev libssl-dev, or scripts/ensure-system.sh)`,
    );
  }
  let version: string | undefined;
  try {
    const r = await run('dpkg-query', ['-W', '-f=${Version}', KERNEL_SOURCE_PACKAGE], { timeoutMs: 30_000 });
    if (r.code === 0 && r.stdout.trim()) version = r.stdout.trim();
  } catch {
    /* no dpkg: key on the tarball below */
  }
  if (!version) {
    const st = await stat(tarball);
    version = `file-${st.size}-${Math.round(st.mtimeMs)}`;
  }
  return { packageName: KERNEL_SOURCE_PACKAGE, version, tarball };
}

/** First line of `gcc --version`: part of the resolved-config memo key (olddefconfig records the compiler). */
async function compilerId(): Promise<string> {
  try {
    const r = await run('gcc', ['--version'], { timeoutMs: 30_000 });
    return r.stdout.split('\n')[0]?.trim() ?? 'unknown';
  } catch {
    throw new Error('gcc is missing: install build-essential (scripts/ensure-system.sh)');
  }
}

/** A lock file per build tree: one `make` at a time. Stale locks (dead pid) are broken. */
async function lockTree(lockPath: string, progress: (p: KernelBuildProgress) => void): Promise<() => Promise<void>> {
  let announced = false;
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => rm(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(holder) || holder <= 0 || !pidAlive(holder)) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (holder === process.pid) throw new Error(`${lockPath} is held by this process (nested kernel build)`);
    if (!announced) {
      progress({ step: 'wait-lock', detail: `the build tree is in use by pid ${holder}; waiting` });
      announced = true;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export interface BuildTree {
  root: string;
  src: string;
  out: string;
  /** <cacheDir>/ccache: compiler cache of the kernel builds (used when ccache is installed). */
  ccacheDir: string;
}

export function buildTreeFor(cacheDir: string, source: KernelSource): BuildTree {
  const root = path.join(path.resolve(cacheDir), 'kernel-build', `${source.packageName}_${source.version}`);
  return { root, src: path.join(root, 'src'), out: path.join(root, 'out'), ccacheDir: path.join(path.resolve(cacheDir), 'ccache') };
}

let ccachePath: Promise<string | undefined> | undefined;
/**
 * ccache, when installed: the elimination loop flips options back and forth and
 * a flip of a widely included option (AIO, RSEQ: mm_types.h, sched.h) recompiles
 * most of the tree; with ccache the way back is cache hits.
 */
function findCcache(): Promise<string | undefined> {
  ccachePath ??= run('ccache', ['--version'], { timeoutMs: 10_000 }).then(
    (r) => (r.code === 0 ? 'ccache' : undefined),
    () => undefined,
  );
  return ccachePath;
}

/** Extracts the tarball once per source version (temp directory + rename). */
async function ensureSourceTree(tree: BuildTree, source: KernelSource, progress: (p: KernelBuildProgress) => void): Promise<void> {
  if (existsSync(path.join(tree.src, 'Makefile'))) return;
  await mkdir(tree.root, { recursive: true });
  const tmp = path.join(tree.root, `.tmp-src-${tmpSuffix()}`);
  await mkdir(tmp);
  try {
    const t0 = Date.now();
    progress({ step: 'extract-source', detail: `tar xJf ${source.tarball} (once per source version)` });
    const r = await run('nice', ['-n', '10', 'tar', 'xJf', source.tarball, '-C', tmp], { timeoutMs: 30 * 60_000 });
    if (r.code !== 0) throw new Error(`tar xJf ${source.tarball} failed: ${r.stderr.trim()}`);
    const [top] = (await readdir(tmp)).filter((n) => !n.startsWith('.'));
    if (!top || !existsSync(path.join(tmp, top, 'Makefile'))) throw new Error(`${source.tarball} holds no kernel tree`);
    await rm(tree.src, { recursive: true, force: true });
    await rename(path.join(tmp, top), tree.src);
    progress({ step: 'extract-source', detail: `done in ${fmtDuration(Date.now() - t0)}` });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Runs make in the tree (ARCH=x86_64, O=out, CC="ccache gcc" when ccache exists), niced; `onLine` sees every output line. */
async function make(
  tree: BuildTree,
  args: string[],
  opts: { nice: number; onLine?: (line: string) => void; timeoutMs?: number },
): Promise<{ code: number | null; tail: string }> {
  const ccache = await findCcache();
  return new Promise((resolve, reject) => {
    const cc = ccache ? ['CC=ccache gcc'] : [];
    const child = spawn('nice', ['-n', String(opts.nice), 'make', '-C', tree.src, `O=${tree.out}`, 'ARCH=x86_64', ...cc, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        LC_ALL: 'C',
        KBUILD_BUILD_USER: 'mayfly',
        KBUILD_BUILD_HOST: 'tinyx',
        CCACHE_DIR: tree.ccacheDir,
        CCACHE_MAXSIZE: '2G',
        // The build tree's absolute path is stable, but this keeps hits across source versions' trees too.
        CCACHE_BASEDIR: tree.root,
      },
    });
    let tail = '';
    let partial = '';
    const onData = (d: string) => {
      tail = (tail + d).slice(-8192);
      if (!opts.onLine) return;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) opts.onLine(l);
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`cannot run make: ${err.message} (install build-essential)`));
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, tail });
    });
  });
}

async function makeOrThrow(tree: BuildTree, args: string[], nice: number): Promise<void> {
  const r = await make(tree, ['-s', ...args], { nice, timeoutMs: 10 * 60_000 });
  if (r.code !== 0) throw new Error(`make ${args.join(' ')} failed (exit ${r.code}): ${r.tail.trim().split('\n').slice(-8).join('\n')}`);
}

/**
 * Resolves a config input to the final .config text in the build tree (runs
 * tinyconfig / olddefconfig). The caller holds the tree lock.
 */
async function resolveInTree(tree: BuildTree, input: KernelConfigInput, nice: number): Promise<string> {
  await mkdir(tree.out, { recursive: true });
  const dotConfig = path.join(tree.out, '.config');
  if (input.kind === 'tinyconfig') {
    await makeOrThrow(tree, ['tinyconfig'], nice);
    let text = await readFile(dotConfig, 'utf8');
    const fragments: string[] = [];
    for (const f of input.fragments) fragments.push(await readFile(f, 'utf8'));
    // Appended: Kconfig takes the last assignment of a symbol (what merge_config.sh does).
    text = [text.trimEnd(), ...fragments.map((f) => f.trimEnd())].join('\n') + '\n';
    await writeFile(dotConfig, text);
    await makeOrThrow(tree, ['olddefconfig'], nice);
    const final = await readFile(dotConfig, 'utf8');
    // Later fragments override earlier ones: check the merged request.
    const merged = [...new Map(fragments.flatMap((f) => [...parseKconfig(f)])).entries()]
      .map(([k, v]) => (v === 'n' ? `# ${k} is not set` : `${k}=${v}`))
      .join('\n');
    const bad = fragmentMismatches(merged, final);
    if (bad.length) throw new Error(`the kernel config fragments ask for values Kconfig refused: ${bad.join('; ')}`);
    return final;
  }
  const text = input.text ?? (input.path ? await readFile(input.path, 'utf8') : undefined);
  if (text === undefined) throw new Error('config input needs a path or a text');
  await writeFile(dotConfig, text);
  await makeOrThrow(tree, ['olddefconfig'], nice);
  return readFile(dotConfig, 'utf8');
}

async function inputKey(source: KernelSource, input: KernelConfigInput): Promise<string> {
  const parts: string[] = [`${source.packageName}_${source.version}`, await compilerId(), input.kind];
  if (input.kind === 'tinyconfig') {
    for (const f of input.fragments) parts.push(sha256(await readFile(f)));
  } else {
    parts.push(normalizeConfig(input.text ?? (await readFile(input.path!, 'utf8'))));
  }
  return sha256(parts.join('\0'));
}

type KernelDir = KernelMetaFile & { needs: { machineOptions: string[]; bootArgs: string[] }; loadBytes: number };

/** Sum of PT_LOAD file sizes of an ELF kernel. */
export async function elfLoadBytes(vmlinux: string): Promise<number> {
  const elf = await readElf(vmlinux);
  return elf.segments.filter((seg) => seg.type === 1).reduce((n, seg) => n + seg.filesz, 0);
}

async function readKernelDir(dir: string): Promise<KernelDir | undefined> {
  try {
    const meta = JSON.parse(await readFile(path.join(dir, 'kernel.json'), 'utf8')) as KernelMetaFile;
    if ((await stat(path.join(dir, 'vmlinux'))).size !== meta.vmlinuxBytes) return undefined;
    // Derived from the config on every read: a better rule needs no rebuild.
    return {
      ...meta,
      needs: microvmNeeds(await readFile(path.join(dir, 'config'), 'utf8')),
      loadBytes: await elfLoadBytes(path.join(dir, 'vmlinux')),
    };
  } catch {
    return undefined;
  }
}

function toBuilt(dir: string, meta: KernelDir, cached: boolean, elapsedMs: number): BuiltKernel {
  return {
    id: meta.id,
    sourcePackage: meta.sourcePackage,
    sourceVersion: meta.sourceVersion,
    release: meta.release,
    configHash: meta.configHash,
    vmlinuxPath: path.join(dir, 'vmlinux'),
    configPath: path.join(dir, 'config'),
    vmlinuxBytes: meta.vmlinuxBytes,
    loadBytes: meta.loadBytes,
    bootArgs: [...meta.needs.bootArgs],
    machineOptions: [...meta.needs.machineOptions],
    buildMs: meta.buildMs,
    cached,
    elapsedMs,
  };
}

export function kernelDirFor(cacheDir: string, source: KernelSource, hash: string): string {
  return path.join(path.resolve(cacheDir), 'tinyx-kernels', `${source.packageName}_${source.version}-${hash.slice(0, 16)}`);
}

/**
 * Resolves a config input to its final .config text without building (memoised:
 * a repeated input costs no make run). Useful to learn the cache key first.
 */
export async function resolveKernelConfig(opts: KernelBuildOptions): Promise<{ source: KernelSource; config: string }> {
  const progress = (p: KernelBuildProgress) => {
    try {
      opts.onProgress?.(p);
    } catch {
      /* a failing printer must not fail the build */
    }
  };
  const source = await findKernelSource(opts.tarball);
  const memoDir = path.join(path.resolve(opts.cacheDir), 'tinyx-kernels', 'resolved');
  const key = await inputKey(source, opts.config);
  const memoPath = path.join(memoDir, `${key.slice(0, 32)}.config`);
  try {
    return { source, config: await readFile(memoPath, 'utf8') };
  } catch {
    /* not memoised yet */
  }
  const tree = buildTreeFor(opts.cacheDir, source);
  await mkdir(tree.root, { recursive: true });
  const unlock = await lockTree(path.join(tree.root, '.lock'), progress);
  try {
    await ensureSourceTree(tree, source, progress);
    progress({ step: 'configure', detail: opts.config.kind === 'tinyconfig' ? `tinyconfig + ${opts.config.fragments.map((f) => path.basename(f)).join(' + ')}` : `olddefconfig of ${opts.config.path ?? 'the given config'}` });
    const config = await resolveInTree(tree, opts.config, opts.nice ?? 10);
    await mkdir(memoDir, { recursive: true });
    // olddefconfig is idempotent: the result resolves to itself, so building it needs no second make run.
    const selfKey = await inputKey(source, { kind: 'config', text: config });
    for (const p of new Set([memoPath, path.join(memoDir, `${selfKey.slice(0, 32)}.config`)])) {
      const tmp = `${p}.tmp-${tmpSuffix()}`;
      await writeFile(tmp, config);
      await rename(tmp, p);
    }
    return { source, config };
  } finally {
    await unlock();
  }
}

/** Returns the cached kernel of an exact final config, if built. */
export async function cachedKernelFor(cacheDir: string, source: KernelSource, config: string): Promise<BuiltKernel | undefined> {
  const dir = kernelDirFor(cacheDir, source, configHash(config));
  const meta = await readKernelDir(dir);
  return meta ? toBuilt(dir, meta, true, 0) : undefined;
}

/**
 * Returns the kernel for a config input, building it when the cache does not
 * hold it. Progress (with the number of objects compiled and an estimate from
 * the tree's previous full build) goes to onProgress.
 */
export async function buildKernel(opts: KernelBuildOptions): Promise<BuiltKernel> {
  const t0 = Date.now();
  const progress = (p: KernelBuildProgress) => {
    try {
      opts.onProgress?.(p);
    } catch {
      /* ignore */
    }
  };
  const nice = opts.nice ?? 10;
  const jobs = opts.jobs ?? 2;
  const { source, config } = await resolveKernelConfig(opts);
  const hash = configHash(config);
  const finalDir = kernelDirFor(opts.cacheDir, source, hash);
  const hit = await readKernelDir(finalDir);
  if (hit) {
    progress({ step: 'done', detail: `kernel ${hit.release} ${hash.slice(0, 16)} (cached, ${Date.now() - t0} ms)` });
    return toBuilt(finalDir, hit, true, Date.now() - t0);
  }

  const tree = buildTreeFor(opts.cacheDir, source);
  const unlock = await lockTree(path.join(tree.root, '.lock'), progress);
  try {
    // Another process may have built it while we waited for the lock.
    const raced = await readKernelDir(finalDir);
    if (raced) return toBuilt(finalDir, raced, true, Date.now() - t0);
    await ensureSourceTree(tree, source, progress);
    await mkdir(tree.out, { recursive: true });
    await writeFile(path.join(tree.out, '.config'), config);
    await makeOrThrow(tree, ['olddefconfig'], nice);
    const after = await readFile(path.join(tree.out, '.config'), 'utf8');
    if (configHash(after) !== hash) throw new Error('olddefconfig changed a resolved config: the resolved-config memo is stale (delete <cache>/tinyx-kernels/resolved)');

    // Estimate from the last full build of this tree.
    const statsPath = path.join(tree.root, 'build-stats.json');
    let fullObjects = 0;
    try {
      fullObjects = (JSON.parse(await readFile(statsPath, 'utf8')) as { fullObjects: number }).fullObjects;
    } catch {
      /* first build */
    }
    const cold = !existsSync(path.join(tree.out, 'vmlinux'));
    const tb = Date.now();
    let compiled = 0;
    let last = '';
    let lastReport = 0;
    const report = (force = false) => {
      const now = Date.now();
      if (!force && now - lastReport < 10_000) return;
      lastReport = now;
      const elapsed = now - tb;
      let eta = '';
      if (fullObjects > compiled && compiled > 20) {
        const left = Math.max(0, fullObjects - compiled);
        eta = `, ~${fmtDuration((elapsed / compiled) * left)} left if this is a full build (${fullObjects} objects)`;
      }
      progress({ step: 'make', detail: `${compiled} objects compiled in ${fmtDuration(elapsed)} (last: ${last})${eta}` });
    };
    progress({ step: 'make', detail: `nice -n ${nice} make -j${jobs} vmlinux in ${tree.out} (config ${hash.slice(0, 16)})` });
    const ticker = setInterval(() => report(), 10_000);
    let r: { code: number | null; tail: string };
    try {
      r = await make(tree, [`-j${jobs}`, 'vmlinux'], {
        nice,
        timeoutMs: 3 * 60 * 60_000,
        onLine: (line) => {
          const m = /^\s+(CC|AS|AR|LD)\s+(\S+)/.exec(line);
          if (m) {
            if (m[1] === 'CC' || m[1] === 'AS') compiled++;
            last = m[2]!;
            report();
          }
        },
      });
    } finally {
      clearInterval(ticker);
    }
    if (r.code !== 0) throw new Error(`make vmlinux failed (exit ${r.code}):\n${r.tail.trim().split('\n').slice(-15).join('\n')}`);
    const buildMs = Date.now() - tb;
    // A build from an empty tree counts every object: the yardstick of later estimates.
    if (cold || compiled > fullObjects) await writeFile(statsPath, JSON.stringify({ fullObjects: Math.max(compiled, cold ? 0 : fullObjects) }) + '\n');
    const rel = await run('make', ['-s', '-C', tree.src, `O=${tree.out}`, 'ARCH=x86_64', 'kernelrelease']);
    const release = rel.stdout.trim().split('\n').pop() ?? '';
    if (rel.code !== 0 || !release) throw new Error(`make kernelrelease failed: ${rel.stderr.trim()}`);
    progress({ step: 'make', detail: `vmlinux ${release} built in ${fmtDuration(buildMs)} (${compiled} objects compiled)` });

    const root = path.dirname(finalDir);
    await mkdir(root, { recursive: true });
    const tmp = path.join(root, `.tmp-${path.basename(finalDir)}-${tmpSuffix()}`);
    await mkdir(tmp);
    try {
      // Symbols off, like the payload of a bzImage (objcopy -R .comment -S): QEMU loads the segments only.
      const strip = await run('objcopy', ['-R', '.comment', '-S', path.join(tree.out, 'vmlinux'), path.join(tmp, 'vmlinux')]).catch(() => undefined);
      if (strip?.code !== 0) await copyFile(path.join(tree.out, 'vmlinux'), path.join(tmp, 'vmlinux'));
      await writeFile(path.join(tmp, 'config'), config);
      const meta: KernelMetaFile = {
        id: `tinyx:${source.packageName}_${source.version}-${hash.slice(0, 16)}`,
        sourcePackage: source.packageName,
        sourceVersion: source.version,
        release,
        configHash: hash,
        vmlinuxBytes: (await stat(path.join(tmp, 'vmlinux'))).size,
        buildMs,
        objectsCompiled: compiled,
        createdAt: new Date().toISOString(),
      };
      await writeFile(path.join(tmp, 'kernel.json'), JSON.stringify(meta, null, 2) + '\n');
      try {
        await rename(tmp, finalDir);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      }
      const done = await readKernelDir(finalDir);
      if (!done) throw new Error(`${finalDir} is incomplete after the build`);
      progress({ step: 'done', detail: `kernel ${release} ${hash.slice(0, 16)} in ${fmtDuration(Date.now() - t0)}` });
      return toBuilt(finalDir, done, false, Date.now() - t0);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  } finally {
    await unlock();
  }
}

/** The config input of the platform's tinyx kernel: the shipped minimized config, else tinyconfig + the microvm fragment. */
export function defaultTinyxConfig(configPath?: string): KernelConfigInput {
  if (configPath) return { kind: 'config', path: configPath };
  if (existsSync(SHIPPED_CONFIG)) return { kind: 'config', path: SHIPPED_CONFIG };
  return { kind: 'tinyconfig', fragments: [MICROVM_FRAGMENT] };
}

/**
 * The tinyx kernel for a hypervisor target: QEMU microvm gets the shipped
 * minimized config (or `configPath`); Xen gets tinyconfig + the microvm and Xen
 * fragments (not minimized: the elimination loop boots under QEMU).
 */
export function tinyxConfigFor(target: 'qemu' | 'xen', configPath?: string): KernelConfigInput {
  if (target === 'xen' && !configPath) return { kind: 'tinyconfig', fragments: [MICROVM_FRAGMENT, XEN_FRAGMENT] };
  return defaultTinyxConfig(configPath);
}

/** The unminimized base: tinyconfig + the microvm fragment. */
export function baseTinyxConfig(): KernelConfigInput {
  return { kind: 'tinyconfig', fragments: [MICROVM_FRAGMENT] };
}

export function formatKernelProgress(p: KernelBuildProgress): string {
  return `kernel: ${p.step}${p.detail ? ` ${p.detail}` : ''}`;
}
