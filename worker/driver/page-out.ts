/**
 * Gives the memory of an idle, paused QEMU back to the host (issue 19): its
 * private pages (TCG's translated code, QEMU's heap, the guest's own dirtied
 * pages, relocated library data) are advised MADV_PAGEOUT from outside with
 * process_madvise(2), so the kernel moves them to swap, which on a density
 * host is compressed RAM (zram: about 3:1 on these pages, measured). A later
 * resume faults them back in (measured: +20 ms on a warm call).
 *
 * Node has no binding for process_madvise, so a 40-line C helper does the
 * syscall; it is compiled once into the cache with the system's C compiler
 * (build-essential, which the kernel build needs anyway). Ranges are chosen
 * here (`pageOutRanges`, unit-tested): everything the process maps except the
 * guest RAM file, whose unmodified pages are the template's, shared by every
 * clone (paging those out would slow all clones of that template), and except
 * the kernel's [vdso]-like special mappings. The kernel itself skips pages that
 * other processes map too (the QEMU binary, shared libraries).
 *
 * Without swap the advice does nothing: `swapAvailable()` tells the caller.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

const SOURCE = String.raw`/* mayfly-page-out PID START-END... (hex): process_madvise(MADV_PAGEOUT) on each range. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#define PAGEOUT 21
int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s PID START-END...\n", argv[0]); return 2; }
  int fd = (int)syscall(SYS_pidfd_open, atoi(argv[1]), 0);
  if (fd < 0) { fprintf(stderr, "pidfd_open: %s\n", strerror(errno)); return 1; }
  long long total = 0;
  for (int i = 2; i < argc; i++) {
    unsigned long a, b;
    if (sscanf(argv[i], "%lx-%lx", &a, &b) != 2 || b <= a) { fprintf(stderr, "bad range %s\n", argv[i]); return 2; }
    struct iovec v = { (void *)a, b - a };
    long r = syscall(SYS_process_madvise, fd, &v, 1, PAGEOUT, 0);
    /* A range can vanish between reading maps and here (QEMU freed it): not an error. */
    if (r < 0 && errno != ENOMEM && errno != EFAULT) { fprintf(stderr, "process_madvise: %s\n", strerror(errno)); return 1; }
    if (r > 0) total += r;
  }
  printf("%lld\n", total);
  return 0;
}
`;

export interface MapRange {
  start: bigint;
  end: bigint;
  perms: string;
  /** The mapped file's inode (0: anonymous). Compared by inode, not path: a jailed QEMU sees its files under other paths. */
  inode: number;
  path: string;
}

/** Parses /proc/<pid>/maps. */
export function parseMaps(text: string): MapRange[] {
  const out: MapRange[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (m) out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, inode: Number(m[4]), path: m[5] ?? '' });
  }
  return out;
}

/** The ranges worth paging out: all but the shared guest RAM file (by inode) and the kernel's special mappings. */
export function pageOutRanges(maps: MapRange[], guestRamInode: number | undefined): string[] {
  return maps
    .filter((m) => !(guestRamInode && m.inode === guestRamInode))
    .filter((m) => !/^\[(vdso|vvar|vvar_vclock|vsyscall)\]$/.test(m.path))
    .filter((m) => m.perms.startsWith('r') || m.perms[1] === 'w')
    .map((m) => `${m.start.toString(16)}-${m.end.toString(16)}`);
}

/** True when the host has swap (e.g. zram) for paged-out memory to go to. */
export function swapAvailable(): boolean {
  try {
    const m = /^SwapFree:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m !== null && Number(m[1]) > 0;
  } catch {
    return false;
  }
}

let helper: Promise<string> | null = null;

/** Compiles the helper into `<cacheDir>/bin/` once (keyed by its source); rejects with why when it cannot. */
export function pageOutHelper(cacheDir: string): Promise<string> {
  helper ??= (async () => {
    const bin = path.join(cacheDir, 'bin', `mayfly-page-out-${createHash('sha256').update(SOURCE).digest('hex').slice(0, 12)}`);
    if (fs.existsSync(bin)) return bin;
    await fsp.mkdir(path.dirname(bin), { recursive: true });
    const src = `${bin}.${process.pid}.c`;
    await fsp.writeFile(src, SOURCE);
    try {
      await run('cc', ['-O2', '-o', `${bin}.${process.pid}`, src], { timeout: 60_000 });
      await fsp.rename(`${bin}.${process.pid}`, bin);
    } finally {
      await fsp.rm(src, { force: true });
    }
    return bin;
  })();
  helper.catch(() => (helper = null));
  return helper;
}

/** Pages out a process's private memory; resolves to the bytes advised. */
export async function pageOut(helperBin: string, pid: number, guestRamPath: string | undefined): Promise<number> {
  const maps = parseMaps(await fsp.readFile(`/proc/${pid}/maps`, 'utf8'));
  // A guest RAM file that cannot be identified: page nothing out rather than the template's pages.
  const ino = guestRamPath === undefined ? undefined : (await fsp.stat(guestRamPath)).ino;
  const ranges = pageOutRanges(maps, ino);
  if (ranges.length === 0) return 0;
  const { stdout } = await run(helperBin, [String(pid), ...ranges], { timeout: 30_000 });
  return Number(stdout.trim()) || 0;
}
