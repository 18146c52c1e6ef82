/**
 * The guest kernel: Debian's cloud kernel (see /work/shared/notes, "Guest
 * kernel"), fetched with `apt-get download` + `dpkg -x` (never installed), its
 * uncompressed vmlinux (PVH entry, faster to boot than the bzImage) cut out of
 * the bzImage, and the few modules the console channel needs.
 *
 * Cache layout, one directory per package, made complete in a temp directory
 * and renamed into place (so it is either absent or complete):
 *   <cacheDir>/kernels/<pkg>/vmlinux
 *   <cacheDir>/kernels/<pkg>/modules/<name>.ko
 *   <cacheDir>/kernels/<pkg>/kernel.json
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { hasElfMagic, readModinfo } from './elf.js';

/** Modules for the virtio console over virtio-mmio, in load order (dependencies are added ahead). */
export const CONSOLE_MODULES = ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_console'];
export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

export interface KernelModule {
  name: string;
  /** Cached .ko on the host. */
  hostPath: string;
}

export interface CachedKernel {
  packageName: string;
  packageVersion: string;
  release: string;
  vmlinuxPath: string;
  /** In load order (dependencies first). */
  modules: KernelModule[];
  /** How the kernel was obtained on this call. */
  source: 'cache' | 'download' | 'cache-fallback';
}

interface KernelMeta {
  packageName: string;
  packageVersion: string;
  release: string;
  vmlinuxBytes: number;
  modules: string[];
  compressedWith: string;
  createdAt: string;
}

type Progress = (step: string, detail?: string) => void;

/** The package could not be fetched (offline, mirror trouble): a cached kernel may stand in. */
export class KernelDownloadError extends Error {
  override name = 'KernelDownloadError';
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command, collecting output. Rejects only when it cannot be started. */
export function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The concrete package behind the linux-image-cloud-amd64 meta package, or undefined when apt cannot tell. */
export async function resolveKernelPackage(): Promise<string | undefined> {
  try {
    const r = await run('apt-cache', ['depends', KERNEL_META_PACKAGE], { timeoutMs: 30_000 });
    if (r.code !== 0) return undefined;
    return /^\s*\|?Depends:\s*(linux-image-[^\s<>]+)/m.exec(r.stdout)?.[1];
  } catch {
    return undefined;
  }
}

/** apt's view changes only when its lists do (apt-get update renames files into this directory). */
const APT_LISTS = '/var/lib/apt/lists';

/**
 * resolveKernelPackage(), memoised in <cacheDir>/kernels/resolved.json against the
 * mtime and inode of /var/lib/apt/lists: `apt-cache depends` costs ~0.65 s on hosts
 * without apt's binary cache (pkgcache.bin), which would dominate a cached ensureImage().
 */
export async function resolveKernelPackageMemo(cacheDir: string): Promise<string | undefined> {
  let key: string | undefined;
  try {
    const st = await stat(APT_LISTS, { bigint: true });
    key = `${st.mtimeNs}:${st.ino}`;
  } catch {
    /* no apt lists: nothing to key on */
  }
  const memoPath = path.join(cacheDir, 'kernels', 'resolved.json');
  if (key) {
    try {
      const memo = JSON.parse(await readFile(memoPath, 'utf8')) as { key: string; meta: string; pkg: string };
      if (memo.key === key && memo.meta === KERNEL_META_PACKAGE && memo.pkg) return memo.pkg;
    } catch {
      /* no memo */
    }
  }
  const pkg = await resolveKernelPackage();
  if (pkg && key) {
    await mkdir(path.dirname(memoPath), { recursive: true });
    const tmp = `${memoPath}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    await writeFile(tmp, JSON.stringify({ key, meta: KERNEL_META_PACKAGE, pkg }) + '\n');
    await rename(tmp, memoPath);
  }
  return pkg;
}

async function readMeta(dir: string): Promise<KernelMeta | undefined> {
  try {
    const meta = JSON.parse(await readFile(path.join(dir, 'kernel.json'), 'utf8')) as KernelMeta;
    const st = await stat(path.join(dir, 'vmlinux'));
    if (st.size !== meta.vmlinuxBytes) return undefined;
    for (const m of CONSOLE_MODULES) if (!meta.modules.includes(m)) return undefined;
    for (const m of meta.modules) await stat(path.join(dir, 'modules', `${m}.ko`));
    return meta;
  } catch {
    return undefined;
  }
}

function toCached(dir: string, meta: KernelMeta, source: CachedKernel['source']): CachedKernel {
  return {
    packageName: meta.packageName,
    packageVersion: meta.packageVersion,
    release: meta.release,
    vmlinuxPath: path.join(dir, 'vmlinux'),
    modules: meta.modules.map((name) => ({ name, hostPath: path.join(dir, 'modules', `${name}.ko`) })),
    source,
  };
}

/** Every complete kernel in the cache, newest first. */
export async function cachedKernels(cacheDir: string): Promise<CachedKernel[]> {
  const root = path.join(cacheDir, 'kernels');
  let names: string[] = [];
  try {
    names = (await readdir(root)).filter((n) => !n.startsWith('.'));
  } catch {
    return [];
  }
  const found: Array<{ k: CachedKernel; at: string }> = [];
  for (const n of names) {
    const meta = await readMeta(path.join(root, n));
    if (meta) found.push({ k: toCached(path.join(root, n), meta, 'cache-fallback'), at: meta.createdAt });
  }
  return found.sort((a, b) => (a.at < b.at ? 1 : -1)).map((f) => f.k);
}

/** Finds every offset of `needle` in `hay`. */
function* offsetsOf(hay: Buffer, needle: Buffer): Generator<number> {
  for (let i = hay.indexOf(needle); i >= 0; i = hay.indexOf(needle, i + 1)) yield i;
}

const PAYLOADS: Array<{ name: string; magic: Buffer; cmd: string; args: string[] }> = [
  // Legacy LZ4 frame, what Debian's x86 kernels use (CONFIG_KERNEL_LZ4).
  { name: 'lz4', magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]), cmd: 'lz4', args: ['-dc'] },
  { name: 'xz', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), cmd: 'xz', args: ['-dc'] },
  { name: 'zstd', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), cmd: 'zstd', args: ['-dc'] },
  { name: 'gzip', magic: Buffer.from([0x1f, 0x8b, 0x08]), cmd: 'gzip', args: ['-dc'] },
];

/**
 * Decompresses `input` from `offset` with a CLI into `out`. The payload is followed
 * by other bytes of the bzImage, so the decompressor usually exits non-zero about
 * trailing garbage: the exit code is ignored and the output judged by its magic
 * (like the kernel's scripts/extract-vmlinux).
 */
async function tryDecompress(image: Buffer, offset: number, cmd: string, args: string[], out: string): Promise<boolean> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'ignore'] });
  const exited = new Promise<void>((resolve) => {
    child.on('close', () => resolve());
    child.on('error', () => resolve());
  });
  child.stdin.on('error', () => {
    /* EPIPE when the tool stops reading the trailing bytes */
  });
  child.stdin.end(image.subarray(offset));
  try {
    await pipeline(child.stdout, createWriteStream(out));
  } catch {
    /* judged below */
  }
  await exited;
  try {
    const fh = await open(out, 'r');
    try {
      const head = Buffer.alloc(4);
      const { bytesRead } = await fh.read(head, 0, 4, 0);
      return bytesRead === 4 && hasElfMagic(head);
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

/** Writes the uncompressed vmlinux (an ELF with the PVH note) found inside a bzImage. */
export async function extractVmlinux(vmlinuz: string, out: string): Promise<string> {
  const image = await readFile(vmlinuz);
  if (hasElfMagic(image)) {
    await copyFile(vmlinuz, out);
    return 'none';
  }
  for (const p of PAYLOADS) {
    for (const off of offsetsOf(image, p.magic)) {
      if (await tryDecompress(image, off, p.cmd, p.args, out)) return p.name;
    }
  }
  await rm(out, { force: true });
  throw new Error(`no ELF kernel found inside ${vmlinuz} (tried ${PAYLOADS.map((p) => p.name).join(', ')})`);
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

const modName = (file: string): string => path.basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');

/**
 * The wanted modules plus their dependencies, dependencies first. Dependencies
 * come from modules.dep when the tree has one (depmod output; Debian's package
 * does not ship it, the postinst generates it), otherwise from each module's own
 * `.modinfo` `depends=`. Modules built into the kernel (modules.builtin) are skipped.
 */
export async function resolveModules(modulesDir: string, wanted: string[]): Promise<Array<{ name: string; file: string }>> {
  const files = (await walk(path.join(modulesDir, 'kernel'))).filter((f) => /\.ko(\.(xz|zst|gz))?$/.test(f));
  const byName = new Map(files.map((f) => [modName(f), f]));
  let builtin = new Set<string>();
  try {
    builtin = new Set(
      (await readFile(path.join(modulesDir, 'modules.builtin'), 'utf8')).split('\n').filter(Boolean).map(modName),
    );
  } catch {
    /* none */
  }
  let depMap: Map<string, string[]> | undefined;
  try {
    const text = await readFile(path.join(modulesDir, 'modules.dep'), 'utf8');
    depMap = new Map();
    for (const line of text.split('\n')) {
      const m = /^([^:]+):\s*(.*)$/.exec(line);
      // modules.dep lists the full transitive set; modprobe loads it from the end.
      if (m) depMap.set(modName(m[1]!), m[2]!.split(/\s+/).filter(Boolean).map(modName).reverse());
    }
  } catch {
    /* fall back to .modinfo */
  }
  const order: Array<{ name: string; file: string }> = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = async (name: string, chain: string[]): Promise<void> => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new Error(`module dependency cycle: ${[...chain, name].join(' -> ')}`);
    const file = byName.get(name);
    if (!file) {
      if (builtin.has(name)) {
        state.set(name, 'done');
        return;
      }
      throw new Error(`kernel module ${name} not found under ${modulesDir}`);
    }
    if (file.endsWith('.xz') || file.endsWith('.zst') || file.endsWith('.gz')) {
      throw new Error(`${file} is compressed; the builder expects CONFIG_MODULE_COMPRESS_NONE`);
    }
    state.set(name, 'visiting');
    const deps =
      depMap?.get(name) ??
      ((await readModinfo(file)).get('depends') ?? [])
        .flatMap((d) => d.split(','))
        .filter(Boolean)
        .map((d) => d.replace(/-/g, '_'));
    for (const d of deps) await visit(d, [...chain, name]);
    state.set(name, 'done');
    order.push({ name, file });
  };
  for (const w of wanted) await visit(w, []);
  return order;
}

async function debVersion(deb: string): Promise<string> {
  const r = await run('dpkg-deb', ['-f', deb, 'Version']);
  return r.code === 0 ? r.stdout.trim() : 'unknown';
}

/** Downloads, extracts and caches one kernel package; returns its complete cache directory. */
async function fetchKernel(cacheDir: string, pkg: string, progress: Progress): Promise<string> {
  const root = path.join(cacheDir, 'kernels');
  const final = path.join(root, pkg);
  const tmp = path.join(root, `.tmp-${pkg}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(path.join(tmp, 'dl'), { recursive: true });
  try {
    progress('download-kernel', `apt-get download ${pkg}`);
    let dl: RunResult;
    try {
      dl = await run('apt-get', ['download', pkg], { cwd: path.join(tmp, 'dl'), timeoutMs: 10 * 60_000 });
    } catch (err) {
      throw new KernelDownloadError(`apt-get download ${pkg} could not run: ${(err as Error).message}`);
    }
    const debs = (await readdir(path.join(tmp, 'dl'))).filter((n) => n.endsWith('.deb'));
    if (dl.code !== 0 || debs.length !== 1) {
      const why = dl.stderr.trim().split('\n').slice(-3).join(' / ');
      throw new KernelDownloadError(`apt-get download ${pkg} failed (exit ${dl.code}): ${why}`);
    }
    const deb = path.join(tmp, 'dl', debs[0]!);
    const version = await debVersion(deb);
    progress('extract-kernel', `dpkg -x ${debs[0]}`);
    const tree = path.join(tmp, 'tree');
    const x = await run('dpkg', ['-x', deb, tree]);
    if (x.code !== 0) throw new Error(`dpkg -x ${deb} failed: ${x.stderr.trim()}`);
    const releases = await readdir(path.join(tree, 'lib', 'modules'));
    if (releases.length !== 1) throw new Error(`expected one lib/modules/<release> in ${pkg}, found ${releases.join(', ')}`);
    const release = releases[0]!;
    const vmlinuz = path.join(tree, 'boot', `vmlinuz-${release}`);
    progress('extract-kernel', `vmlinux from ${path.basename(vmlinuz)}`);
    const compressedWith = await extractVmlinux(vmlinuz, path.join(tmp, 'vmlinux'));
    const modulesDir = path.join(tree, 'lib', 'modules', release);
    const mods = await resolveModules(modulesDir, CONSOLE_MODULES);
    await mkdir(path.join(tmp, 'modules'));
    for (const m of mods) await copyFile(m.file, path.join(tmp, 'modules', `${m.name}.ko`));
    const meta: KernelMeta = {
      packageName: pkg,
      packageVersion: version,
      release,
      vmlinuxBytes: (await stat(path.join(tmp, 'vmlinux'))).size,
      modules: mods.map((m) => m.name),
      compressedWith,
      createdAt: new Date().toISOString(),
    };
    await writeFile(path.join(tmp, 'kernel.json'), JSON.stringify(meta, null, 2) + '\n');
    await rm(path.join(tmp, 'dl'), { recursive: true, force: true });
    await rm(tree, { recursive: true, force: true });
    // An incomplete leftover (older builder, missing module) is moved aside first.
    if (!(await readMeta(final))) {
      await rename(final, `${tmp}-stale`).catch(() => undefined);
      await rm(`${tmp}-stale`, { recursive: true, force: true });
    }
    try {
      await rename(tmp, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // Another process won the race with an equivalent directory.
    }
    return final;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Returns a complete cached kernel, downloading it when needed. Offline (apt
 * cannot resolve or download the package) it falls back to the newest complete
 * kernel already in the cache.
 */
export async function ensureKernel(cacheDir: string, progress: Progress = () => undefined): Promise<CachedKernel> {
  progress('resolve-kernel', `apt-cache depends ${KERNEL_META_PACKAGE}`);
  const pkg = await resolveKernelPackageMemo(cacheDir);
  const fallback = async (why: string): Promise<CachedKernel> => {
    const k = (await cachedKernels(cacheDir))[0];
    if (!k) throw new Error(`${why}, and no kernel is cached in ${path.join(cacheDir, 'kernels')}`);
    progress('resolve-kernel', `${why}: using cached ${k.packageName}`);
    return k;
  };
  if (!pkg) return fallback(`apt-cache could not resolve ${KERNEL_META_PACKAGE}`);
  const dir = path.join(cacheDir, 'kernels', pkg);
  const meta = await readMeta(dir);
  if (meta) {
    progress('resolve-kernel', `${pkg} (cached)`);
    return toCached(dir, meta, 'cache');
  }
  let final: string;
  try {
    final = await fetchKernel(cacheDir, pkg, progress);
  } catch (err) {
    if (err instanceof KernelDownloadError) return fallback(err.message);
    throw err;
  }
  const fresh = await readMeta(final);
  if (!fresh) throw new Error(`kernel cache ${final} is incomplete after download`);
  return toCached(final, fresh, 'download');
}
