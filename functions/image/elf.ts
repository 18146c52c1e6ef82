/**
 * A small ELF64 reader: just what the image builder needs to discover a
 * binary's shared-library closure the way Tinyx does (no `ldd`, which would run
 * the binary's loader on the host), to check that busybox is static, and to read
 * a kernel module's `.modinfo` section (its `depends=`).
 *
 * It reads only the headers and the few regions it needs (program headers, the
 * dynamic segment, its string table), never the whole file: /usr/bin/node is
 * ~100 MB. Only little-endian ELF64 is supported (x86-64 hosts and guests).
 */
import { open, type FileHandle } from 'node:fs/promises';

export const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]); // \x7fELF

// Program header types.
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
// Dynamic tags.
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
// Section types.
const SHT_NOBITS = 8;

export const EM_X86_64 = 62;

export interface ElfSegment {
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfSection {
  name: string;
  type: number;
  offset: number;
  size: number;
}

export interface ElfInfo {
  /** 1 = ET_REL (a kernel module), 2 = ET_EXEC, 3 = ET_DYN (PIE or shared object). */
  type: number;
  /** e_machine, 62 for x86-64. */
  machine: number;
  /** PT_INTERP: the program interpreter (dynamic loader), absent for static binaries and libraries. */
  interp?: string;
  /** True when the file has a PT_DYNAMIC segment. */
  dynamic: boolean;
  /** DT_NEEDED entries in file order. */
  needed: string[];
  /** DT_SONAME. */
  soname?: string;
  /** DT_RUNPATH split on ':' (unexpanded: may contain $ORIGIN). */
  runpath: string[];
  /** DT_RPATH split on ':' (unexpanded). */
  rpath: string[];
  segments: ElfSegment[];
}

export class ElfError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'ElfError';
  }
}

/** True when the buffer starts with the ELF magic. */
export function hasElfMagic(head: Uint8Array): boolean {
  return head.length >= 4 && ELF_MAGIC.equals(Buffer.from(head.buffer, head.byteOffset, 4));
}

/** Random access to a file, through a handle or an in-memory buffer. */
interface Source {
  name: string;
  size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

function bufferSource(name: string, buf: Buffer): Source {
  return {
    name,
    size: buf.length,
    read: async (offset, length) => buf.subarray(offset, Math.min(buf.length, offset + length)),
  };
}

function fileSource(name: string, fh: FileHandle, size: number): Source {
  return {
    name,
    size,
    read: async (offset, length) => {
      const out = Buffer.alloc(Math.max(0, Math.min(length, size - offset)));
      let got = 0;
      while (got < out.length) {
        const { bytesRead } = await fh.read(out, got, out.length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return out.subarray(0, got);
    },
  };
}

function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(v);
}

async function exact(src: Source, offset: number, length: number, what: string): Promise<Buffer> {
  if (offset < 0 || length < 0 || offset + length > src.size) {
    throw new ElfError(src.name, `${what} (offset ${offset}, ${length} bytes) lies outside the file (${src.size} bytes)`);
  }
  const buf = await src.read(offset, length);
  if (buf.length !== length) throw new ElfError(src.name, `short read of ${what}`);
  return buf;
}

interface Header {
  type: number;
  machine: number;
  phoff: number;
  phentsize: number;
  phnum: number;
  shoff: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

async function readHeader(src: Source): Promise<Header> {
  if (src.size < 64) throw new ElfError(src.name, 'too small to be an ELF64 file');
  const h = await exact(src, 0, 64, 'ELF header');
  if (!hasElfMagic(h)) throw new ElfError(src.name, 'not an ELF file (bad magic)');
  if (h[4] !== 2) throw new ElfError(src.name, `unsupported ELF class ${h[4]} (only ELF64)`);
  if (h[5] !== 1) throw new ElfError(src.name, 'unsupported byte order (only little-endian)');
  return {
    type: h.readUInt16LE(16),
    machine: h.readUInt16LE(18),
    phoff: u64(h, 32),
    shoff: u64(h, 40),
    phentsize: h.readUInt16LE(54),
    phnum: h.readUInt16LE(56),
    shentsize: h.readUInt16LE(58),
    shnum: h.readUInt16LE(60),
    shstrndx: h.readUInt16LE(62),
  };
}

async function readSegments(src: Source, h: Header): Promise<ElfSegment[]> {
  if (h.phnum === 0) return [];
  if (h.phentsize < 56) throw new ElfError(src.name, `bad program header size ${h.phentsize}`);
  const table = await exact(src, h.phoff, h.phentsize * h.phnum, 'program header table');
  const out: ElfSegment[] = [];
  for (let i = 0; i < h.phnum; i++) {
    const o = i * h.phentsize;
    out.push({
      type: table.readUInt32LE(o),
      flags: table.readUInt32LE(o + 4),
      offset: u64(table, o + 8),
      vaddr: u64(table, o + 16),
      filesz: u64(table, o + 32),
      memsz: u64(table, o + 40),
    });
  }
  return out;
}

function cString(buf: Buffer, off: number): string {
  const end = buf.indexOf(0, off);
  return buf.toString('utf8', off, end < 0 ? buf.length : end);
}

/** Maps a virtual address to a file offset through the PT_LOAD segments (what the loader sees). */
function vaddrToOffset(segments: ElfSegment[], vaddr: number): number | undefined {
  for (const s of segments) {
    if (s.type === PT_LOAD && vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz) return s.offset + (vaddr - s.vaddr);
  }
  return undefined;
}

async function parse(src: Source): Promise<ElfInfo> {
  const h = await readHeader(src);
  const segments = await readSegments(src, h);
  const info: ElfInfo = {
    type: h.type,
    machine: h.machine,
    dynamic: false,
    needed: [],
    runpath: [],
    rpath: [],
    segments,
  };
  const interp = segments.find((s) => s.type === PT_INTERP);
  if (interp) {
    info.interp = cString(await exact(src, interp.offset, interp.filesz, 'PT_INTERP'), 0);
  }
  const dyn = segments.find((s) => s.type === PT_DYNAMIC);
  if (!dyn) return info;
  info.dynamic = true;
  const table = await exact(src, dyn.offset, dyn.filesz, 'dynamic segment');
  const entries: Array<[number, number]> = [];
  let strtab: number | undefined;
  let strsz: number | undefined;
  for (let o = 0; o + 16 <= table.length; o += 16) {
    const tag = Number(table.readBigInt64LE(o));
    const val = u64(table, o + 8);
    if (tag === DT_NULL) break;
    if (tag === DT_STRTAB) strtab = val;
    else if (tag === DT_STRSZ) strsz = val;
    else entries.push([tag, val]);
  }
  const wanted = entries.filter(([t]) => t === DT_NEEDED || t === DT_SONAME || t === DT_RPATH || t === DT_RUNPATH);
  if (wanted.length === 0) return info;
  if (strtab === undefined) throw new ElfError(src.name, 'dynamic section has string references but no DT_STRTAB');
  const strOff = vaddrToOffset(segments, strtab);
  if (strOff === undefined) throw new ElfError(src.name, `DT_STRTAB address 0x${strtab.toString(16)} is in no PT_LOAD segment`);
  const strLen = Math.min(strsz ?? src.size - strOff, src.size - strOff);
  // The table can be MBs (node exports all of V8): read only the referenced strings.
  const chunk = async (off: number): Promise<string> => {
    if (off >= strLen) throw new ElfError(src.name, `string offset ${off} beyond DT_STRSZ ${strLen}`);
    let out = '';
    for (let at = off; at < strLen; at += 4096) {
      const buf = await src.read(strOff + at, Math.min(4096, strLen - at));
      const nul = buf.indexOf(0);
      if (nul >= 0) return out + buf.toString('utf8', 0, nul);
      out += buf.toString('utf8');
      if (buf.length === 0) break;
    }
    return out;
  };
  for (const [tag, val] of wanted) {
    const s = await chunk(val);
    if (tag === DT_NEEDED) info.needed.push(s);
    else if (tag === DT_SONAME) info.soname = s;
    else if (tag === DT_RPATH) info.rpath.push(...s.split(':').filter(Boolean));
    else info.runpath.push(...s.split(':').filter(Boolean));
  }
  return info;
}

/** Parses an ELF64 file on disk (reads only the parts it needs). */
export async function readElf(file: string): Promise<ElfInfo> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    return await parse(fileSource(file, fh, size));
  } finally {
    await fh.close();
  }
}

/** Parses an ELF64 image held in memory. */
export function parseElf(buf: Buffer, name = '<buffer>'): Promise<ElfInfo> {
  return parse(bufferSource(name, buf));
}

/** True when the file starts with the ELF magic (false for scripts, missing files, ...). */
export async function isElfFile(file: string): Promise<boolean> {
  try {
    const fh = await open(file, 'r');
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

/** The section headers with their names (from .shstrtab). */
export async function readElfSections(file: string): Promise<ElfSection[]> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const src = fileSource(file, fh, size);
    const h = await readHeader(src);
    if (h.shnum === 0) return [];
    if (h.shentsize < 64) throw new ElfError(file, `bad section header size ${h.shentsize}`);
    const table = await exact(src, h.shoff, h.shentsize * h.shnum, 'section header table');
    const raw = [];
    for (let i = 0; i < h.shnum; i++) {
      const o = i * h.shentsize;
      raw.push({
        nameOff: table.readUInt32LE(o),
        type: table.readUInt32LE(o + 4),
        offset: u64(table, o + 24),
        size: u64(table, o + 32),
      });
    }
    const strSec = raw[h.shstrndx];
    const names = strSec ? await exact(src, strSec.offset, strSec.size, '.shstrtab') : Buffer.alloc(0);
    return raw.map((s) => ({ name: cString(names, s.nameOff), type: s.type, offset: s.offset, size: s.size }));
  } finally {
    await fh.close();
  }
}

/** The bytes of one named section, or undefined when the file has no such section. */
export async function readElfSection(file: string, name: string): Promise<Buffer | undefined> {
  const sec = (await readElfSections(file)).find((s) => s.name === name);
  if (!sec || sec.type === SHT_NOBITS) return undefined;
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    return await exact(fileSource(file, fh, size), sec.offset, sec.size, name);
  } finally {
    await fh.close();
  }
}

/** A kernel module's `.modinfo` as key -> values (e.g. depends, name, vermagic). */
export async function readModinfo(file: string): Promise<Map<string, string[]>> {
  const raw = await readElfSection(file, '.modinfo');
  const out = new Map<string, string[]>();
  if (!raw) return out;
  for (const item of raw.toString('utf8').split('\0')) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const key = item.slice(0, eq);
    out.set(key, [...(out.get(key) ?? []), item.slice(eq + 1)]);
  }
  return out;
}
