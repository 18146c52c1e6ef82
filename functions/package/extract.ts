/**
 * Safe extraction of a function package (.tar.gz, .tgz, plain .tar or .zip)
 * into an empty folder. Every entry is checked before anything is written:
 *   - paths: no absolute paths, no `..` segment (PACKAGE_PATH_TRAVERSAL)
 *   - symlinks: allowed only when their target stays inside the package
 *   - hard links, devices, FIFOs: refused (PACKAGE_UNSUPPORTED_ENTRY)
 *   - limits: entry count and total unpacked bytes (PACKAGE_TOO_LARGE),
 *     checked from the headers before an entry's data is read; zip entry
 *     sizes are verified against the data (yauzl's validateEntrySizes)
 * Files are written with mode 0644 (0755 when executable in the archive),
 * folders 0755; owners and times from the archive are ignored.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import yauzl from 'yauzl';
import { PackageError } from './errors.js';

export interface ExtractLimits {
  maxFiles: number;
  maxUnpackedBytes: number;
}

export type ArchiveFormat = 'tar.gz' | 'tar' | 'zip';

/** The format from the first bytes (gzip 1f 8b, zip "PK\x03\x04" or an empty zip's "PK\x05\x06", ustar at 257). */
export function detectFormat(buf: Buffer): ArchiveFormat | null {
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return 'tar.gz';
  if (buf.length >= 4 && buf[0] === 0x50 && buf[1] === 0x4b && (buf[2] === 3 || buf[2] === 5) && (buf[3] === 4 || buf[3] === 6)) return 'zip';
  if (buf.length >= 262 && buf.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  return null;
}

/**
 * The entry's path as a clean relative POSIX path ("" for the root itself), or a
 * PACKAGE_PATH_TRAVERSAL error naming it.
 */
export function safeRelativePath(raw: string): string {
  const p = raw.replace(/\\/g, '/');
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p)) {
    throw new PackageError('PACKAGE_PATH_TRAVERSAL', `the archive entry "${raw}" has an absolute path; package paths must be relative`, raw);
  }
  if (p.includes('\0')) throw new PackageError('PACKAGE_PATH_TRAVERSAL', `the archive entry ${JSON.stringify(raw)} has a NUL byte in its path`, raw);
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) {
    throw new PackageError('PACKAGE_PATH_TRAVERSAL', `the archive entry "${raw}" has a ".." path segment (path traversal); package paths must stay inside the package`, raw);
  }
  return parts.join('/');
}

/** Checks that a symlink at `rel` pointing at `target` stays inside the package. */
export function checkSymlink(rel: string, target: string): void {
  if (target.startsWith('/') || /^[A-Za-z]:/.test(target)) {
    throw new PackageError('PACKAGE_PATH_TRAVERSAL', `the symlink "${rel}" points at the absolute path "${target}", outside the package`, rel);
  }
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(rel), target.replace(/\\/g, '/')));
  if (resolved === '..' || resolved.startsWith('../')) {
    throw new PackageError('PACKAGE_PATH_TRAVERSAL', `the symlink "${rel}" points at "${target}", outside the package`, rel);
  }
}

interface Entry {
  path: string;
  kind: 'file' | 'dir' | 'symlink' | 'other';
  /** Description of an unsupported kind (for the error). */
  what?: string;
  size: number;
  mode: number;
  linkTarget?: string;
}

/** Writes validated entries under `root`, keeping the counts. */
class Writer {
  private files = 0;
  private bytes = 0;
  constructor(
    private readonly root: string,
    private readonly limits: ExtractLimits,
  ) {}

  /** Checks the entry and reserves its size; returns the clean relative path ('' = skip). */
  admit(e: Entry): string {
    const rel = safeRelativePath(e.path);
    if (e.kind === 'other') {
      throw new PackageError('PACKAGE_UNSUPPORTED_ENTRY', `the archive entry "${e.path}" is a ${e.what}; packages may hold only files, folders and symlinks inside the package`, e.path);
    }
    if (rel === '') return '';
    if (++this.files > this.limits.maxFiles) {
      throw new PackageError('PACKAGE_TOO_LARGE', `the package has more than ${this.limits.maxFiles} entries (MAYFLY_PACKAGE_MAX_FILES)`);
    }
    this.bytes += e.size;
    if (this.bytes > this.limits.maxUnpackedBytes) {
      throw new PackageError('PACKAGE_TOO_LARGE', `the package unpacks to more than ${this.limits.maxUnpackedBytes} bytes (MAYFLY_PACKAGE_MAX_UNPACKED_BYTES)`);
    }
    if (e.kind === 'symlink') checkSymlink(rel, e.linkTarget ?? '');
    return rel;
  }

  /** Parent folder of `rel`, created, and checked to be inside root once symlinks are resolved. */
  private parentOf(rel: string): string {
    const dir = path.join(this.root, path.dirname(rel));
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    const real = fs.realpathSync(dir);
    const realRoot = fs.realpathSync(this.root);
    if (real !== realRoot && !real.startsWith(realRoot + path.sep)) {
      throw new PackageError('PACKAGE_PATH_TRAVERSAL', `the archive entry "${rel}" would be written outside the package (through a symlink)`, rel);
    }
    return dir;
  }

  write(rel: string, e: Entry, data: Buffer | null): void {
    const target = path.join(this.parentOf(rel), path.basename(rel));
    if (e.kind === 'dir') {
      fs.mkdirSync(target, { recursive: true, mode: 0o755 });
      return;
    }
    fs.rmSync(target, { force: true });
    if (e.kind === 'symlink') fs.symlinkSync(e.linkTarget!, target);
    else fs.writeFileSync(target, data ?? Buffer.alloc(0), { mode: e.mode & 0o111 ? 0o755 : 0o644, flag: 'wx' });
  }
}

const TAR_KINDS: Record<string, Entry['kind']> = {
  File: 'file',
  OldFile: 'file',
  ContiguousFile: 'file',
  Directory: 'dir',
  SymbolicLink: 'symlink',
};

function extractTar(buf: Buffer, writer: Writer): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed: unknown = null;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = err;
      reject(err);
      // Stop reading: the rest of a refused archive (a gzip bomb, say) is never decompressed.
      setImmediate(() => parser.abort(err as Error));
    };
    const parser: Parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        if (failed) return entry.resume();
        const kind = TAR_KINDS[entry.type] ?? 'other';
        const e: Entry = {
          path: entry.path,
          kind,
          what: entry.type === 'Link' ? 'hard link (archive the file itself)' : `${entry.type} entry`,
          size: kind === 'file' ? entry.size : 0,
          mode: entry.mode ?? 0o644,
          ...(entry.linkpath !== undefined ? { linkTarget: entry.linkpath } : {}),
        };
        let rel: string;
        try {
          rel = writer.admit(e);
        } catch (err) {
          fail(err);
          return entry.resume();
        }
        const chunks: Buffer[] = [];
        entry.on('data', (c: Buffer) => chunks.push(c));
        entry.on('end', () => {
          if (failed || rel === '') return;
          try {
            writer.write(rel, e, Buffer.concat(chunks));
          } catch (err) {
            fail(err);
          }
        });
      },
    });
    parser.on('error', (err: Error) => fail(new PackageError('PACKAGE_INVALID', `the archive is not a valid .tar.gz/.tar: ${err.message}`)));
    parser.on('warn', (code: string, message: string) => {
      if (code !== 'TAR_ENTRY_INFO') fail(new PackageError('PACKAGE_INVALID', `the archive is not a valid .tar.gz/.tar: ${message}`));
    });
    parser.on('end', () => {
      if (!failed) resolve();
    });
    parser.end(buf);
  });
}

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

function readZipEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => {
      if (err || !stream) return reject(err ?? new Error('no stream'));
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', reject);
      stream.on('end', () => resolve(Buffer.concat(chunks)));
    });
  });
}

function extractZip(buf: Buffer, writer: Writer): Promise<void> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buf, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip) return reject(new PackageError('PACKAGE_INVALID', `the archive is not a valid .zip: ${err?.message ?? 'unreadable'}`));
      const invalid = (e: unknown) =>
        e instanceof PackageError ? e : new PackageError('PACKAGE_INVALID', `the archive is not a valid .zip: ${(e as Error).message}`);
      zip.on('error', (e: unknown) => reject(invalid(e)));
      zip.on('end', () => resolve());
      zip.on('entry', (entry: yauzl.Entry) => {
        void (async () => {
          const name = Buffer.isBuffer(entry.fileName) ? (entry.fileName as Buffer).toString('utf8') : String(entry.fileName);
          const mode = (entry.externalFileAttributes >>> 16) & 0xffff;
          const type = mode & S_IFMT;
          let kind: Entry['kind'] = name.endsWith('/') ? 'dir' : 'file';
          if (type === S_IFLNK) kind = 'symlink';
          else if (type !== 0 && type !== S_IFREG && type !== S_IFDIR) kind = 'other';
          else if (type === S_IFDIR) kind = 'dir';
          const e: Entry = { path: name, kind, what: 'special file (device, FIFO or socket)', size: kind === 'file' ? entry.uncompressedSize : 0, mode: mode & 0o777 };
          if (kind === 'symlink') {
            if (entry.uncompressedSize > 4096) throw new PackageError('PACKAGE_INVALID', `the symlink "${name}" has a target longer than 4096 bytes`, name);
            e.linkTarget = (await readZipEntry(zip, entry)).toString('utf8');
          }
          const rel = writer.admit(e);
          if (rel !== '') writer.write(rel, e, kind === 'file' ? await readZipEntry(zip, entry) : null);
          zip.readEntry();
        })().catch((e: unknown) => {
          zip.close();
          reject(invalid(e));
        });
      });
      zip.readEntry();
    });
  });
}

/**
 * Extracts `archive` into `dir` (created; must not exist or be empty). Returns the
 * package root: `dir`, or its single top-level folder when the archive holds
 * only that folder and it has a package.json (`tar czf fn.tgz myfn/`, `npm pack`'s `package/`).
 */
export async function extractPackage(archive: Buffer, dir: string, limits: ExtractLimits): Promise<{ root: string; format: ArchiveFormat }> {
  const format = detectFormat(archive);
  if (!format) {
    throw new PackageError('PACKAGE_INVALID', 'the package is not a .tar.gz, .tar or .zip archive (send the archive bytes, base64-encoded, in "package")');
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const writer = new Writer(dir, limits);
  if (format === 'zip') await extractZip(archive, writer);
  else await extractTar(archive, writer);
  const top = fs.readdirSync(dir, { withFileTypes: true });
  const only = top.length === 1 && top[0]!.isDirectory() ? path.join(dir, top[0]!.name) : null;
  const root = only && fs.existsSync(path.join(only, 'package.json')) ? only : dir;
  return { root, format };
}
