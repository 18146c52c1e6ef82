/**
 * newc ("070701") cpio archives, written in pure TypeScript, as the kernel's
 * initramfs unpacker reads them (Documentation/driver-api/early-userspace/
 * buffer-format.rst): a 110-byte ASCII header of 13 8-digit hex fields, the
 * NUL-terminated name padded to 4 bytes, the data padded to 4 bytes, and a final
 * `TRAILER!!!` entry.
 *
 * Reproducible: uid/gid 0, mtime 0, inode numbers assigned in archive order,
 * entries sorted so that every directory precedes its contents.
 */
import { createReadStream } from 'node:fs';
import path from 'node:path';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

export type CpioSource =
  | { kind: 'file'; hostPath: string; size: number }
  | { kind: 'text'; text: string };

export type CpioEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; mode: number; source: CpioSource }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; mode: number; rdevMajor: number; rdevMinor: number };

const HEADER_BYTES = 110;
const TRAILER = 'TRAILER!!!';

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/** Archive name of a guest path: no leading slash ("bin/busybox"). */
export function archiveName(guestPath: string): string {
  const n = path.posix.normalize(guestPath).replace(/^\/+/, '').replace(/\/+$/, '');
  if (n === '' || n === '.' || n.startsWith('..')) throw new Error(`bad guest path "${guestPath}"`);
  return n;
}

export function entryDataSize(e: CpioEntry): number {
  if (e.type === 'file') return e.source.kind === 'file' ? e.source.size : Buffer.byteLength(e.source.text);
  if (e.type === 'symlink') return Buffer.byteLength(e.target);
  return 0;
}

function entryMode(e: CpioEntry): number {
  switch (e.type) {
    case 'dir':
      return S_IFDIR | (e.mode & 0o7777);
    case 'file':
      return S_IFREG | (e.mode & 0o7777);
    case 'symlink':
      return S_IFLNK | 0o777;
    case 'char':
      return S_IFCHR | (e.mode & 0o7777);
  }
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

export interface HeaderFields {
  ino: number;
  mode: number;
  nlink: number;
  filesize: number;
  rdevMajor?: number;
  rdevMinor?: number;
  name: string;
}

/** One newc header + name + padding (uid, gid, mtime, dev are 0). */
export function cpioHeader(f: HeaderFields): Buffer {
  const nameBytes = Buffer.byteLength(f.name) + 1;
  const head =
    '070701' +
    hex8(f.ino) +
    hex8(f.mode) +
    hex8(0) + // uid
    hex8(0) + // gid
    hex8(f.nlink) +
    hex8(0) + // mtime
    hex8(f.filesize) +
    hex8(0) + // devmajor
    hex8(0) + // devminor
    hex8(f.rdevMajor ?? 0) +
    hex8(f.rdevMinor ?? 0) +
    hex8(nameBytes) +
    hex8(0); // check
  const buf = Buffer.alloc(HEADER_BYTES + nameBytes + pad4(HEADER_BYTES + nameBytes));
  buf.write(head, 0, 'latin1');
  buf.write(f.name, HEADER_BYTES, 'utf8');
  return buf;
}

function compareGuestPaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

/**
 * Normalises an entry list: adds missing parent directories (0755), rejects
 * duplicates, and sorts component-wise so every directory precedes its contents.
 */
export function normalizeEntries(entries: CpioEntry[]): CpioEntry[] {
  const byName = new Map<string, CpioEntry>();
  for (const e of entries) {
    const name = archiveName(e.path);
    if (byName.has(name)) throw new Error(`duplicate cpio entry ${name}`);
    byName.set(name, { ...e, path: name });
  }
  for (const name of [...byName.keys()]) {
    for (let d = path.posix.dirname(name); d !== '.' && d !== '/'; d = path.posix.dirname(d)) {
      const existing = byName.get(d);
      if (!existing) byName.set(d, { type: 'dir', path: d, mode: 0o755 });
      else if (existing.type !== 'dir') throw new Error(`${d} is a parent of ${name} but not a directory`);
    }
  }
  return [...byName.values()].sort((a, b) => compareGuestPaths(a.path, b.path));
}

/** Exact size in bytes of the archive `cpioChunks(entries)` produces. */
export function cpioSize(entries: CpioEntry[]): number {
  let total = 0;
  const rec = (name: string, size: number) => {
    const head = HEADER_BYTES + Buffer.byteLength(name) + 1;
    total += head + pad4(head) + size + pad4(size);
  };
  for (const e of normalizeEntries(entries)) rec(e.path, entryDataSize(e));
  rec(TRAILER, 0);
  return total;
}

/**
 * Streams the archive as Buffers. `onBytes` gets the running byte count. A host
 * file whose size differs from the declared one is an error (the archive would be
 * corrupt), so callers stat files right before building the entry list.
 */
export async function* cpioChunks(
  entries: CpioEntry[],
  onBytes?: (written: number) => void,
): AsyncGenerator<Buffer> {
  let written = 0;
  const emit = (b: Buffer): Buffer => {
    written += b.length;
    onBytes?.(written);
    return b;
  };
  let ino = 1;
  for (const e of normalizeEntries(entries)) {
    const size = entryDataSize(e);
    yield emit(
      cpioHeader({
        ino: ino++,
        mode: entryMode(e),
        nlink: e.type === 'dir' ? 2 : 1,
        filesize: size,
        rdevMajor: e.type === 'char' ? e.rdevMajor : 0,
        rdevMinor: e.type === 'char' ? e.rdevMinor : 0,
        name: e.path,
      }),
    );
    if (e.type === 'symlink') yield emit(Buffer.from(e.target));
    else if (e.type === 'file' && e.source.kind === 'text') yield emit(Buffer.from(e.source.text));
    else if (e.type === 'file' && e.source.kind === 'file') {
      let got = 0;
      for await (const chunk of createReadStream(e.source.hostPath, { highWaterMark: 1 << 20 })) {
        const b = chunk as Buffer;
        got += b.length;
        if (got > size) break;
        yield emit(b);
      }
      if (got !== size) {
        throw new Error(`${e.source.hostPath} changed while archiving: expected ${size} bytes, read ${got}`);
      }
    }
    if (pad4(size)) yield emit(Buffer.alloc(pad4(size)));
  }
  yield emit(cpioHeader({ ino: 0, mode: 0, nlink: 1, filesize: 0, name: TRAILER }));
}

export interface ParsedCpioEntry {
  name: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer;
}

/** Parses a whole newc archive (up to and excluding the trailer). For tests and inspection. */
export function parseCpio(buf: Buffer): ParsedCpioEntry[] {
  const out: ParsedCpioEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_BYTES > buf.length) throw new Error(`truncated cpio header at ${off}`);
    const magic = buf.toString('latin1', off, off + 6);
    if (magic !== '070701') throw new Error(`bad cpio magic "${magic}" at ${off}`);
    const field = (i: number) => parseInt(buf.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const namesize = field(11);
    const filesize = field(6);
    const nameStart = off + HEADER_BYTES;
    const name = buf.toString('utf8', nameStart, nameStart + namesize - 1);
    const dataStart = nameStart + namesize + pad4(HEADER_BYTES + namesize);
    if (name === TRAILER) return out;
    if (dataStart + filesize > buf.length) throw new Error(`truncated data of ${name}`);
    out.push({
      name,
      ino: field(0),
      mode: field(1),
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      rdevMajor: field(9),
      rdevMinor: field(10),
      data: buf.subarray(dataStart, dataStart + filesize),
    });
    off = dataStart + filesize + pad4(filesize);
  }
}
