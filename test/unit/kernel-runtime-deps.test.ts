/**
 * Dependency discovery of guest runtimes: strace output parsing, and real
 * discovery on this host (python3 from python3-minimal, a static busybox, node).
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { discoverRuntime, parseStrace, RUNTIME_RECIPES, staticBinaryRecipe } from '../../functions/image/runtime-deps.js';

describe('parseStrace', () => {
  it('reads successful and failed accesses, with pids, *at syscalls and split lines of concurrent threads', () => {
    const text = [
      '4711  execve("/usr/bin/python3", ["python3", "-c", ""], 0x7ffd /* 3 vars */) = 0',
      '4711  access("/etc/ld.so.preload", R_OK) = -1 ENOENT (No such file or directory)',
      '4711  openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY|O_CLOEXEC) = 3',
      '4712  openat(AT_FDCWD, "/usr/lib/python3.11/os.py", O_RDONLY|O_CLOEXEC <unfinished ...>',
      '4711  newfstatat(AT_FDCWD, "/usr/lib/python3.11", {st_mode=S_IFDIR|0755, st_size=4096, ...}, 0) = 0',
      '4712  <... openat resumed>) = 5',
      '4711  readlink("/with \\"quote\\"", 0x7ffc, 4096) = -1 EINVAL (Invalid argument)',
      '4711  +++ exited with 0 +++',
    ].join('\n');
    expect(parseStrace(text)).toEqual([
      { pid: 4711, syscall: 'execve', path: '/usr/bin/python3', ok: true },
      { pid: 4711, syscall: 'access', path: '/etc/ld.so.preload', ok: false },
      { pid: 4711, syscall: 'openat', path: '/lib/x86_64-linux-gnu/libc.so.6', ok: true },
      { pid: 4711, syscall: 'newfstatat', path: '/usr/lib/python3.11', ok: true },
      { pid: 4712, syscall: 'openat', path: '/usr/lib/python3.11/os.py', ok: true },
      { pid: 4711, syscall: 'readlink', path: '/with "quote"', ok: false },
    ]);
  });
});

describe('discoverRuntime (real strace on this host)', () => {
  it.runIf(existsSync('/usr/bin/python3'))('python3: the interpreter, its libraries and the stdlib modules it opens at start', async () => {
    const r = await discoverRuntime(RUNTIME_RECIPES.python3!);
    expect(r.traced).toBe(true);
    const paths = r.files.map((f) => f.guestPath);
    expect(paths).toContain('/usr/bin/python3');
    expect(r.files.find((f) => f.guestPath === '/usr/bin/python3')!.hostPath).toMatch(/python3\.\d+$/);
    expect(r.files.some((f) => f.reason === 'interpreter' && /ld-linux-x86-64\.so\.2$/.test(f.guestPath))).toBe(true);
    expect(paths.some((p) => /libc\.so\.6$/.test(p))).toBe(true);
    // stdlib modules the start-up imported, found only by tracing
    expect(paths.some((p) => /\/python3\.\d+\/(os|json\/__init__)\.py$/.test(p))).toBe(true);
    // never the host's pseudo file systems or caches
    expect(paths.filter((p) => /^\/(proc|sys|dev|tmp)\//.test(p) || p.endsWith('.pyc') && p.includes('__pycache__'))).toEqual([]);
  });

  it('a static binary needs only itself', async () => {
    const r = await discoverRuntime(staticBinaryRecipe('/bin/busybox'));
    expect(r.files.map((f) => [f.guestPath, f.reason])).toEqual([['/usr/bin/busybox', 'binary']]);
  });

  it('node: the ELF closure plus what it opens at start-up', async () => {
    const r = await discoverRuntime(RUNTIME_RECIPES.node!);
    const reasons = new Set(r.files.map((f) => f.reason));
    expect(reasons.has('binary')).toBe(true);
    expect(reasons.has('needed')).toBe(true);
    expect(r.files.find((f) => f.guestPath === '/usr/bin/node')!.hostPath).toBe(await import('node:fs/promises').then((m) => m.realpath(process.execPath)));
  });
});
