import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { cpioChunks, cpioSize, normalizeEntries, parseCpio, type CpioEntry } from '../../functions/image/cpio.js';

async function withArchive(entries: CpioEntry[], fn: (file: string, dir: string) => void | Promise<void>) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-cpio-'));
  try {
    const file = path.join(dir, 'a.cpio');
    await pipeline(Readable.from(cpioChunks(entries)), createWriteStream(file));
    await fn(file, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('newc cpio writer', () => {
  it('round-trips names, modes, data and special files', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-cpio-src-'));
    const host = path.join(dir, 'blob');
    const blob = Buffer.alloc(100_003, 7); // not a multiple of 4
    writeFileSync(host, blob);
    const entries: CpioEntry[] = [
      { type: 'file', path: '/usr/bin/tool', mode: 0o755, source: { kind: 'file', hostPath: host, size: blob.length } },
      { type: 'file', path: '/init', mode: 0o755, source: { kind: 'text', text: '#!/bin/sh\necho hi\n' } },
      { type: 'dir', path: '/tmp', mode: 0o1777 },
      { type: 'char', path: '/dev/console', mode: 0o600, rdevMajor: 5, rdevMinor: 1 },
      { type: 'symlink', path: '/lib64', target: 'usr/lib64' },
    ];
    try {
      await withArchive(entries, (file) => {
        const buf = readFileSync(file);
        expect(buf.length).toBe(cpioSize(entries));
        expect(buf.length % 4).toBe(0);
        const parsed = parseCpio(buf);
        const names = parsed.map((e) => e.name);
        // parents added and listed before their contents
        expect(names).toEqual(['dev', 'dev/console', 'init', 'lib64', 'tmp', 'usr', 'usr/bin', 'usr/bin/tool']);
        const by = new Map(parsed.map((e) => [e.name, e]));
        expect(by.get('usr/bin/tool')!.mode).toBe(0o100755);
        expect(by.get('usr/bin/tool')!.data.equals(blob)).toBe(true);
        expect(by.get('init')!.data.toString()).toBe('#!/bin/sh\necho hi\n');
        expect(by.get('tmp')!.mode).toBe(0o041777);
        expect(by.get('usr')!.mode).toBe(0o040755);
        expect(by.get('dev/console')!.mode).toBe(0o020600);
        expect([by.get('dev/console')!.rdevMajor, by.get('dev/console')!.rdevMinor]).toEqual([5, 1]);
        expect(by.get('lib64')!.mode).toBe(0o120777);
        expect(by.get('lib64')!.data.toString()).toBe('usr/lib64');
        for (const e of parsed) {
          expect([e.uid, e.gid, e.mtime]).toEqual([0, 0, 0]);
        }
        expect(new Set(parsed.map((e) => e.ino)).size).toBe(parsed.length);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is read by the cpio CLI', async () => {
    if (spawnSync('cpio', ['--version']).status !== 0) return;
    const entries: CpioEntry[] = [
      { type: 'file', path: '/bin/x', mode: 0o700, source: { kind: 'text', text: 'abc' } },
      { type: 'file', path: '/etc/hostname', mode: 0o644, source: { kind: 'text', text: 'mayfly\n' } },
    ];
    await withArchive(entries, (file, dir) => {
      const list = spawnSync('cpio', ['-t', '-v', '--quiet', '-F', file], { encoding: 'utf8' });
      expect(list.status).toBe(0);
      const lines = list.stdout.trim().split('\n');
      expect(lines.map((l) => l.split(/\s+/).pop())).toEqual(['bin', 'bin/x', 'etc', 'etc/hostname']);
      expect(lines[1]).toMatch(/^-rwx------\s+1 root\s+root\s+3 /);
      expect(lines[3]).toMatch(/^-rw-r--r--\s+1 root\s+root\s+7 /);
      const out = path.join(dir, 'x');
      const ex = spawnSync('cpio', ['-i', '-d', '--quiet', '-F', file, '-D', out], { encoding: 'utf8' });
      expect(ex.status).toBe(0);
      expect(readFileSync(path.join(out, 'etc/hostname'), 'utf8')).toBe('mayfly\n');
    });
  });

  it('is reproducible', async () => {
    const entries: CpioEntry[] = [{ type: 'file', path: '/a', mode: 0o644, source: { kind: 'text', text: 'x' } }];
    let first: Buffer | undefined;
    for (let i = 0; i < 2; i++) {
      await withArchive(entries, (file) => {
        const b = readFileSync(file);
        if (first) expect(b.equals(first)).toBe(true);
        first = b;
      });
    }
  });

  it('rejects duplicates, files under non-directories and a host file that changed size', async () => {
    expect(() =>
      normalizeEntries([
        { type: 'dir', path: '/a', mode: 0o755 },
        { type: 'dir', path: 'a/', mode: 0o755 },
      ]),
    ).toThrow(/duplicate/);
    expect(() =>
      normalizeEntries([
        { type: 'file', path: '/a', mode: 0o644, source: { kind: 'text', text: '' } },
        { type: 'file', path: '/a/b', mode: 0o644, source: { kind: 'text', text: '' } },
      ]),
    ).toThrow(/not a directory/);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mayfly-cpio-src-'));
    try {
      writeFileSync(path.join(dir, 'f'), 'short');
      const bad: CpioEntry[] = [
        { type: 'file', path: '/f', mode: 0o644, source: { kind: 'file', hostPath: path.join(dir, 'f'), size: 99 } },
      ];
      await expect(withArchive(bad, () => undefined)).rejects.toThrow(/changed while archiving/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
