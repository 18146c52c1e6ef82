/**
 * Dependency discovery for a guest runtime (Tinyx's second half): what a
 * runtime needs in the initramfs is
 *   1. its ELF closure: PT_INTERP + DT_NEEDED, resolved like the loader (deps.ts), and
 *   2. the files it opens while it starts: a representative start-up is run on
 *      the host under `strace -f -e trace=file` and every path a syscall opened,
 *      stat'ed or exec'ed successfully, that is still a regular file, is kept
 *      (stdlib modules, locale data, dlopen'ed extension modules and *their*
 *      DT_NEEDED closure).
 *
 * A runtime is then a recipe of a few lines (RUNTIME_RECIPES below): the binary,
 * a start-up to trace, extra trees to ship whole, paths to leave out.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveLibraryClosure } from './deps.js';
import { isElfFile } from './elf.js';

export interface RuntimeRecipe {
  name: string;
  /** The runtime's main binary: absolute, or a name looked up in PATH. */
  binary: string;
  /** Where it lives in the guest (default: the path it was found at). */
  guestPath?: string;
  /** Arguments of a representative start-up, traced on the host. Absent: no tracing (ELF closure only). */
  startupArgs?: string[];
  /** Environment of the traced start-up and of the runtime in the guest. */
  env?: Record<string, string>;
  /** Host files or whole directories shipped as they are (e.g. a stdlib tree the start-up does not touch). */
  include?: string[];
  /** Traced paths matching any of these are not shipped. */
  exclude?: RegExp[];
}

export type FileReason = 'binary' | 'interpreter' | 'needed' | 'opened' | 'included';

export interface RuntimeFile {
  /** Absolute path inside the guest (the path the runtime asked for). */
  guestPath: string;
  /** The real file on the host (symlinks resolved). */
  hostPath: string;
  reason: FileReason;
  bytes: number;
}

export interface RuntimeFiles {
  recipe: string;
  files: RuntimeFile[];
  totalBytes: number;
  /** False when strace is not installed: only the ELF closure was found. */
  traced: boolean;
}

/** Never shipped: pseudo file systems, per-run state, the host's caches. */
const ALWAYS_EXCLUDED = [/^\/(proc|sys|dev|run|tmp|var\/tmp)\//, /^\/etc\/ld\.so\.(cache|preload)$/, /\/__pycache__\/.*\.pyc$/];

/**
 * Recipes. Adding a runtime = one entry. `node` is what the platform ships today
 * (build.ts adds the agent); `python3` is Debian's python3-minimal.
 */
export const RUNTIME_RECIPES: Record<string, RuntimeRecipe> = {
  node: {
    name: 'node',
    binary: process.execPath,
    guestPath: '/usr/bin/node',
    startupArgs: ['-e', 'require("node:fs"); require("node:crypto").randomBytes(8); require("node:zlib")'],
  },
  python3: {
    name: 'python3',
    binary: '/usr/bin/python3', // Debian's python3-minimal
    guestPath: '/usr/bin/python3',
    startupArgs: ['-c', 'import json, os, sys, base64, hashlib, re, time, traceback'],
    env: { PYTHONDONTWRITEBYTECODE: '1', LANG: 'C.UTF-8' },
  },
};

/** A recipe for a plain binary (static or dynamic): its ELF closure, no tracing needed. */
export function staticBinaryRecipe(binary: string, guestPath = `/usr/bin/${path.basename(binary)}`): RuntimeRecipe {
  return { name: `binary:${path.basename(binary)}`, binary, guestPath };
}

/**
 * The recipe a reference names: a key of RUNTIME_RECIPES (`python3`), or
 * `binary:/abs/path` for a plain binary (shipped as /usr/bin/<name>).
 * This is the syntax of MAYFLY_IMAGE_RUNTIMES and `mayfly image build --runtime`.
 */
export function recipeFor(ref: string): RuntimeRecipe {
  if (ref.startsWith('binary:')) {
    const bin = ref.slice('binary:'.length);
    if (!path.isAbsolute(bin)) throw new Error(`runtime "${ref}": the binary must be an absolute path`);
    return staticBinaryRecipe(bin);
  }
  if (ref === 'node') throw new Error('runtime "node" is always in the image (the agent runs on it): list only extra runtimes');
  const r = RUNTIME_RECIPES[ref];
  if (!r) throw new Error(`unknown runtime "${ref}" (known: ${Object.keys(RUNTIME_RECIPES).filter((k) => k !== 'node').join(', ')}, or binary:/abs/path)`);
  return r;
}

async function which(name: string): Promise<string> {
  if (name.includes('/')) return path.resolve(name);
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const p = path.join(dir || '.', name);
    try {
      await access(p, fsConstants.X_OK);
      if ((await stat(p)).isFile()) return p;
    } catch {
      /* next */
    }
  }
  throw new Error(`${name} is not installed (not found in PATH)`);
}

export interface TracedAccess {
  pid: number;
  syscall: string;
  path: string;
  ok: boolean;
}

const FILE_SYSCALL = /^(?:(\d+)\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$/;

/** The first double-quoted string of a strace argument list (strace escapes `"` and `\`). */
function firstString(args: string): string | undefined {
  const m = /"((?:[^"\\]|\\.)*)"/.exec(args);
  if (!m) return undefined;
  return m[1]!.replace(/\\(["\\])/g, '$1').replace(/\\x([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/**
 * Parses `strace -f -e trace=file` output into accesses, joining
 * `<unfinished ...>` / `<... resumed>` pairs of concurrent threads.
 */
export function parseStrace(text: string): TracedAccess[] {
  const out: TracedAccess[] = [];
  const pending = new Map<string, string>(); // pid -> partial line
  for (let line of text.split('\n')) {
    line = line.trim();
    if (!line) continue;
    const pidM = /^(\d+)\s+/.exec(line);
    const pid = pidM ? pidM[1]! : '0';
    const unfinished = /^(.*?)\s*<unfinished \.\.\.>$/.exec(line);
    if (unfinished) {
      pending.set(pid, unfinished[1]!);
      continue;
    }
    const resumed = /^(?:\d+\s+)?<\.\.\. \w+ resumed>\s?(.*)$/.exec(line);
    if (resumed) {
      const head = pending.get(pid);
      pending.delete(pid);
      if (!head) continue;
      line = `${head}${resumed[1]}`;
    }
    const m = FILE_SYSCALL.exec(line);
    if (!m) continue;
    const p = firstString(m[3]!);
    if (!p) continue;
    out.push({ pid: Number(m[1] ?? pid), syscall: m[2]!, path: p, ok: m[4] !== '?' && Number(m[4]) >= 0 });
  }
  return out;
}

/** Runs `cmd args` under strace and returns what it accessed. */
export async function traceFileAccesses(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<TracedAccess[]> {
  const dir = path.join(os.tmpdir(), `mayfly-strace-${process.pid}-${randomBytes(3).toString('hex')}`);
  await mkdir(dir, { recursive: true });
  const out = path.join(dir, 'trace.txt');
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('strace', ['-f', '-qq', '-s', '4096', '-e', 'trace=file', '-o', out, '--', cmd, ...args], {
        cwd: dir,
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, ...env },
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4096)));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        reject((err as NodeJS.ErrnoException).code === 'ENOENT' ? new Error('strace is not installed') : err);
      });
      child.on('close', (c) => {
        clearTimeout(timer);
        if (c !== 0) reject(new Error(`${cmd} ${args.join(' ')} under strace exited with ${c}: ${stderr.trim()}`));
        else resolve(c);
      });
    });
    void code;
    return parseStrace(await readFile(out, 'utf8'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function regularFile(p: string): Promise<{ real: string; bytes: number } | undefined> {
  try {
    const real = await realpath(p);
    const st = await stat(real);
    return st.isFile() ? { real, bytes: st.size } : undefined;
  } catch {
    return undefined;
  }
}

async function walkFiles(dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  const out: string[] = [];
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...(await walkFiles(p)));
    else out.push(p);
  }
  return out;
}

/**
 * Everything `recipe` needs in the guest: binary, ELF closure, traced start-up
 * files (and the ELF closure of traced shared objects), included trees.
 */
export async function discoverRuntime(recipe: RuntimeRecipe): Promise<RuntimeFiles> {
  const binary = await which(recipe.binary);
  const files = new Map<string, RuntimeFile>();
  const exclude = [...ALWAYS_EXCLUDED, ...(recipe.exclude ?? [])];
  const add = async (guestPath: string, reason: FileReason): Promise<void> => {
    const gp = path.posix.normalize(guestPath);
    if (files.has(gp) || exclude.some((re) => re.test(gp))) return;
    const f = await regularFile(gp);
    if (!f) return;
    files.set(gp, { guestPath: gp, hostPath: f.real, reason, bytes: f.bytes });
  };
  const addClosure = async (elfPath: string): Promise<void> => {
    const c = await resolveLibraryClosure(elfPath);
    if (c.interpreter) await add(c.interpreter.guestPath, 'interpreter');
    for (const l of c.libraries) await add(l.guestPath, 'needed');
  };

  const binReal = await realpath(binary);
  const guestBin = recipe.guestPath ?? binary;
  files.set(guestBin, { guestPath: guestBin, hostPath: binReal, reason: 'binary', bytes: (await stat(binReal)).size });
  await addClosure(binary);

  let traced = false;
  if (recipe.startupArgs) {
    try {
      const accesses = await traceFileAccesses(binary, recipe.startupArgs, recipe.env);
      traced = true;
      for (const a of accesses) {
        if (!a.ok || !path.isAbsolute(a.path) || a.path === binary || a.path === binReal) continue;
        const before = files.size;
        await add(a.path, 'opened');
        // A shared object the runtime loaded itself (dlopen) brings its own DT_NEEDED.
        if (files.size > before && /\.so(\.|$)/.test(a.path) && (await isElfFile(a.path))) await addClosure(a.path);
      }
    } catch (err) {
      if (!/strace is not installed/.test((err as Error).message)) throw err;
    }
  }
  for (const inc of recipe.include ?? []) {
    const st = await stat(inc);
    for (const f of st.isDirectory() ? await walkFiles(inc) : [inc]) await add(f, 'included');
  }
  const list = [...files.values()].sort((a, b) => a.guestPath.localeCompare(b.guestPath));
  return { recipe: recipe.name, files: list, traced, totalBytes: list.reduce((n, f) => n + f.bytes, 0) };
}

export function formatRuntimeFiles(r: RuntimeFiles): string {
  const byReason = new Map<FileReason, number>();
  for (const f of r.files) byReason.set(f.reason, (byReason.get(f.reason) ?? 0) + 1);
  return [
    `runtime ${r.recipe}: ${r.files.length} files, ${(r.totalBytes / 1048576).toFixed(1)} MiB (${[...byReason].map(([k, n]) => `${n} ${k}`).join(', ')})${r.traced ? '' : ' [strace missing: ELF closure only]'}`,
    ...r.files.map((f) => `  ${f.reason.padEnd(11)} ${f.guestPath}${f.hostPath !== f.guestPath ? ` -> ${f.hostPath}` : ''} (${f.bytes})`),
  ].join('\n');
}
