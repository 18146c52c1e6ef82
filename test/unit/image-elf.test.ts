import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readElf, isElfFile, EM_X86_64 } from '../../functions/image/elf.js';
import { resolveLibraryClosure, readLdSoConf } from '../../functions/image/deps.js';

const NODE = existsSync('/usr/bin/node') ? '/usr/bin/node' : process.execPath;

describe('ELF parser', () => {
  it('reads PT_INTERP and DT_NEEDED of node', async () => {
    const elf = await readElf(NODE);
    expect(elf.machine).toBe(EM_X86_64);
    expect(elf.dynamic).toBe(true);
    expect(elf.interp).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(elf.needed).toContain('libc.so.6');
    expect(elf.needed).toContain('libstdc++.so.6');
  });

  it('reads DT_SONAME of a library', async () => {
    const elf = await readElf(realpathSync('/lib/x86_64-linux-gnu/libc.so.6'));
    expect(elf.soname).toBe('libc.so.6');
  });

  it('sees that busybox-static has no interpreter', async () => {
    const bb = ['/bin/busybox', '/usr/bin/busybox'].find(existsSync);
    if (!bb) return;
    const elf = await readElf(bb);
    expect(elf.interp).toBeUndefined();
  });

  it('rejects a file that is not ELF', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-elf-'));
    try {
      const f = path.join(dir, 'script.sh');
      writeFileSync(f, '#!/bin/sh\necho hi\n'.repeat(10));
      expect(await isElfFile(f)).toBe(false);
      await expect(readElf(f)).rejects.toThrow(/not an ELF file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('library closure (Tinyx dependency discovery)', () => {
  it('resolves node to the interpreter plus exactly its libraries, under loader paths', async () => {
    const c = await resolveLibraryClosure(NODE);
    expect(c.interpreter?.guestPath).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(existsSync(c.interpreter!.hostPath)).toBe(true);
    const byName = new Map(c.libraries.map((l) => [l.name, l]));
    expect(byName.get('libc.so.6')?.guestPath).toMatch(/^\/(usr\/)?lib\/x86_64-linux-gnu\/libc\.so\.6$/);
    expect(byName.get('libstdc++.so.6')?.guestPath).toMatch(/\/libstdc\+\+\.so\.6$/);
    // the real file behind the symlink is what gets shipped
    expect(byName.get('libstdc++.so.6')?.hostPath).toBe(realpathSync(byName.get('libstdc++.so.6')!.guestPath));
    // the interpreter is satisfied by PT_INTERP, not searched again; no duplicates
    expect(byName.has('ld-linux-x86-64.so.2')).toBe(false);
    expect(new Set(c.libraries.map((l) => l.guestPath)).size).toBe(c.libraries.length);
    // every NEEDED of every shipped object is shipped
    const names = new Set([...byName.keys(), 'ld-linux-x86-64.so.2']);
    for (const l of c.libraries) for (const n of (await readElf(l.hostPath)).needed) expect(names).toContain(n);
  });

  it('reads ld.so.conf includes', async () => {
    const dirs = await readLdSoConf();
    if (existsSync('/etc/ld.so.conf.d/x86_64-linux-gnu.conf')) expect(dirs).toContain('/lib/x86_64-linux-gnu');
  });

  it('fails loudly on a library that cannot be found', async () => {
    await expect(resolveLibraryClosure(NODE, { ldSoConfDirs: [], defaultDirs: ['/nonexistent'] })).rejects.toThrow(
      /cannot find shared library/,
    );
  });
});
