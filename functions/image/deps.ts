/**
 * Shared-library closure of a dynamically linked binary, found the way the
 * dynamic loader would find it (Tinyx's dependency discovery), without running
 * anything: PT_INTERP, then DT_NEEDED breadth first, each name searched in
 * DT_RPATH (only when the object has no DT_RUNPATH), LD_LIBRARY_PATH is ignored
 * on purpose (the host's environment must not shape the guest), DT_RUNPATH, the
 * directories of /etc/ld.so.conf (with its `include`s), then the defaults.
 *
 * Each library is recorded under the path the loader looks for (the search
 * directory + the NEEDED name, e.g. /lib/x86_64-linux-gnu/libc.so.6), with the
 * real file behind any symlinks as the bytes to ship.
 */
import { readFile, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { readElf, isElfFile, type ElfInfo } from './elf.js';

export const DEFAULT_LIBRARY_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib64',
  '/lib',
  '/usr/lib',
];

export interface ShippedFile {
  /** Absolute path inside the guest. */
  guestPath: string;
  /** The real file on the host (symlinks resolved). */
  hostPath: string;
}

export interface LibraryClosure {
  /** The PT_INTERP loader at its PT_INTERP path, absent for static binaries. */
  interpreter?: ShippedFile;
  /** Every library the loader would map, in load (breadth-first) order, without the interpreter. */
  libraries: Array<ShippedFile & { name: string; neededBy: string }>;
}

export interface ResolveOptions {
  /** Replaces the /etc/ld.so.conf directories (tests). */
  ldSoConfDirs?: string[];
  /** Replaces DEFAULT_LIBRARY_DIRS. */
  defaultDirs?: string[];
}

function globToRegExp(pattern: string): RegExp {
  const esc = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${esc}$`);
}

/** The directories listed in an ld.so.conf file, following `include` lines (globs allowed). */
export async function readLdSoConf(file = '/etc/ld.so.conf', seen = new Set<string>()): Promise<string[]> {
  if (seen.has(file)) return [];
  seen.add(file);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const rawLine of text.split('\n')) {
    const line = rawLine.replace(/#.*/, '').trim();
    if (!line) continue;
    const inc = /^include\s+(.+)$/.exec(line);
    if (inc) {
      for (const pat of inc[1]!.trim().split(/\s+/)) {
        const abs = path.resolve(path.dirname(file), pat);
        const dir = path.dirname(abs);
        const re = globToRegExp(path.basename(abs));
        let names: string[] = [];
        try {
          names = (await readdir(dir)).filter((n) => re.test(n)).sort();
        } catch {
          /* no such directory */
        }
        for (const n of names) out.push(...(await readLdSoConf(path.join(dir, n), seen)));
      }
      continue;
    }
    // Old syntax allows "dir=TYPE" and several dirs on one line.
    for (const d of line.split(/[\s:,]+/)) if (d.startsWith('/')) out.push(d.replace(/=.*$/, ''));
  }
  return out;
}

function expandDst(dir: string, originDir: string): string {
  return dir
    .replace(/\$\{ORIGIN\}|\$ORIGIN/g, originDir)
    .replace(/\$\{LIB\}|\$LIB/g, 'lib/x86_64-linux-gnu')
    .replace(/\$\{PLATFORM\}|\$PLATFORM/g, 'x86_64');
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

interface Loaded {
  file: string; // path the object was found at (for $ORIGIN)
  elf: ElfInfo;
}

/**
 * Resolves the shared-library closure of `binary`. Throws when a NEEDED library
 * cannot be found: an image that lacks one would fail only inside the guest.
 */
export async function resolveLibraryClosure(binary: string, opts: ResolveOptions = {}): Promise<LibraryClosure> {
  const main = await readElf(binary);
  const confDirs = opts.ldSoConfDirs ?? (await readLdSoConf());
  const defaults = opts.defaultDirs ?? DEFAULT_LIBRARY_DIRS;
  const closure: LibraryClosure = { libraries: [] };
  // Names already satisfied: the loader matches NEEDED against loaded objects' sonames.
  const satisfied = new Set<string>();

  if (main.interp) {
    const hostPath = await realpath(main.interp);
    closure.interpreter = { guestPath: path.posix.normalize(main.interp), hostPath };
    const ld = await readElf(hostPath);
    satisfied.add(ld.soname ?? path.basename(main.interp));
    satisfied.add(path.basename(main.interp));
  }

  const queue: Loaded[] = [{ file: binary, elf: main }];
  const mainRpath = main.runpath.length === 0 ? main.rpath : [];
  for (let qi = 0; qi < queue.length; qi++) {
    const obj = queue[qi]!;
    const origin = path.dirname(path.resolve(obj.file));
    for (const name of obj.elf.needed) {
      if (satisfied.has(name)) continue;
      let found: string | undefined;
      if (name.includes('/')) {
        found = path.resolve(origin, name);
        if (!(await isFile(found))) found = undefined;
      } else {
        const dirs: string[] = [];
        // DT_RPATH applies only when the object has no DT_RUNPATH; the executable's RPATH
        // is inherited by everything it loads (the object's own loader chain, simplified).
        if (obj.elf.runpath.length === 0) dirs.push(...obj.elf.rpath.map((d) => expandDst(d, origin)), ...mainRpath);
        dirs.push(...obj.elf.runpath.map((d) => expandDst(d, origin)), ...confDirs, ...defaults);
        for (const dir of dirs) {
          const candidate = path.resolve(dir, name);
          if (!(await isFile(candidate)) || !(await isElfFile(candidate))) continue;
          // The loader skips libraries of another class or machine.
          try {
            const lib = await readElf(candidate);
            if (lib.machine !== main.machine) continue;
          } catch {
            continue;
          }
          found = candidate;
          break;
        }
      }
      if (!found) throw new Error(`cannot find shared library ${name} (needed by ${obj.file})`);
      const hostPath = await realpath(found);
      const elf = await readElf(hostPath);
      satisfied.add(name);
      if (elf.soname) satisfied.add(elf.soname);
      closure.libraries.push({ name, guestPath: found, hostPath, neededBy: obj.file });
      queue.push({ file: found, elf });
    }
  }
  return closure;
}
