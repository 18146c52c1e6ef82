import { describe, expect, it } from 'vitest';
import { HostMemory } from '../../worker/host-memory.js';
import { pageOutRanges, parseMaps } from '../../worker/driver/page-out.js';

describe('HostMemory', () => {
  it('fits while MemAvailable minus the need stays at or above the reserve', () => {
    let avail: number | null = 2000;
    const h = new HostMemory(1024, () => avail, 0);
    expect(h.fits(976)).toBe(true);
    expect(h.fits(977)).toBe(false);
    avail = null; // no /proc/meminfo: the budget alone decides
    expect(h.fits(1e9)).toBe(true);
  });

  it('counts memory being freed by evictions until they are done', async () => {
    const h = new HostMemory(1024, () => 1000, 0);
    expect(h.fits(10)).toBe(false);
    let done!: () => void;
    h.freeing(100, new Promise<void>((r) => (done = r)));
    expect(h.fits(50)).toBe(true);
    done();
    await new Promise((r) => setTimeout(r, 0));
    expect(h.fits(50)).toBe(false);
  });

  it('reads /proc/meminfo at most once per cache period', () => {
    let reads = 0;
    const h = new HostMemory(0, () => (reads++, 5000), 60_000);
    h.fits(1);
    h.fits(1);
    h.availableMiB();
    expect(reads).toBe(1);
  });
});

describe('page-out ranges', () => {
  const maps = parseMaps(
    [
      '55d0c0000000-55d0c0100000 r--p 00000000 fe:01 123 /usr/bin/qemu-system-x86_64',
      '55d0c0100000-55d0c0200000 r-xp 00100000 fe:01 123 /usr/bin/qemu-system-x86_64',
      '55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0 [heap]',
      '7f0000000000-7f0040000000 rwxp 00000000 00:00 0 ',
      '7f0040000000-7f0040001000 ---p 00000000 00:00 0 ',
      '7f1000000000-7f1008000000 rw-p 00000000 00:1a 77 /ram',
      '7ffd00000000-7ffd00002000 r--p 00000000 00:00 0 [vvar]',
      '7ffd00002000-7ffd00004000 r-xp 00000000 00:00 0 [vdso]',
      'garbage line',
    ].join('\n'),
  );

  it('parses /proc/<pid>/maps lines', () => {
    expect(maps).toHaveLength(8);
    expect(maps[2]).toMatchObject({ start: 0x55d0c1000000n, end: 0x55d0c1400000n, perms: 'rw-p', inode: 0, path: '[heap]' });
    expect(maps[5]).toMatchObject({ inode: 77, path: '/ram' });
  });

  it('takes all private memory but the shared guest RAM file (by inode: a jailed QEMU sees another path), guard pages and the kernel mappings', () => {
    expect(pageOutRanges(maps, 77)).toEqual([
      '55d0c0000000-55d0c0100000',
      '55d0c0100000-55d0c0200000',
      '55d0c1000000-55d0c1400000',
      '7f0000000000-7f0040000000',
    ]);
  });
});
