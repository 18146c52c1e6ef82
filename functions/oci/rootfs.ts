/**
 * Image layers → one root filesystem → a gzip'd newc cpio whose entries sit
 * under `rootfs/`. Put before Mayfly's own initramfs (the kernel unpacks
 * concatenated archives in order), it puts the image at /rootfs in the guest,
 * next to the agent, which runs the function chrooted there.
 *
 * Layers are applied in order in memory, as the OCI image spec says:
 *  - `.wh.<name>` deletes <name> (and what is under it) from lower layers;
 *  - `.wh..wh..opq` empties its directory of what lower layers put there;
 *  - a later entry replaces an earlier one of the same path.
 * Refused (IMAGE_LAYER_UNSAFE): a `..` path component, a hard link out of the
 * image, an entry below a symlink (it would be written through the link).
 * Devices and FIFOs are skipped (the guest has devtmpfs). Hard links become
 * copies. Sizes and entry counts are checked as entries arrive.
 */
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { cpioHeader, S_IFDIR, S_IFLNK, S_IFREG } from '../image/cpio.js';
import { ImageError } from './errors.js';

const gzip = promisify(zlib.gzip);

type Node =
  | { type: 'dir'; mode: number }
  | { type: 'file'; mode: number; data: Buffer }
  | { type: 'symlink'; target: string }
  | { type: 'hardlink'; target: string; mode: number };

export interface RootfsLimits {
  maxUnpackedBytes: number;
  maxFiles: number;
}

export interface Rootfs {
  /** gzip'd newc cpio of the tree under rootfs/. */
  cpioGz: Buffer;
  sha256: string;
  files: number;
  unpackedBytes: number;
}

/** A layer path without leading `./` or `/`; '' for the root itself; throws on `..`. */
export function cleanPath(raw: string, layer: string): string {
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw new ImageError('IMAGE_LAYER_UNSAFE', `layer ${layer} has the path "${raw}", which leaves the image (a ".." component); the image is refused`);
  }
  return parts.join('/');
}

export class RootfsBuilder {
  private readonly tree = new Map<string, Node>();
  private bytes = 0;

  constructor(private readonly limits: RootfsLimits) {}

  private count(layer: string): void {
    if (this.tree.size > this.limits.maxFiles) {
      throw new ImageError('IMAGE_TOO_LARGE', `the image has more than ${this.limits.maxFiles} files (at layer ${layer}; MAYFLY_IMAGE_MAX_FILES)`);
    }
  }

  /** Removes `p` and everything below it. */
  private removeTree(p: string): void {
    const prefix = `${p}/`;
    for (const [k, n] of this.tree) {
      if (k !== p && !k.startsWith(prefix)) continue;
      if (n.type === 'file') this.bytes -= n.data.length;
      this.tree.delete(k);
    }
  }

  /** Every ancestor must be a directory (made when missing): nothing is written through a symlink. */
  private ensureParents(p: string, layer: string): void {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      const n = this.tree.get(d);
      if (!n) this.tree.set(d, { type: 'dir', mode: 0o755 });
      else if (n.type !== 'dir') {
        throw new ImageError('IMAGE_LAYER_UNSAFE', `layer ${layer} writes "${p}" below "${d}", which is a ${n.type}, not a directory; the image is refused`);
      }
    }
  }

  /** Applies one layer (a tar, gzip'd or not: the parser tells by its first bytes). */
  async apply(layer: Buffer, name: string): Promise<void> {
    const thisLayer = new Set<string>();
    const opaque: string[] = [];
    await new Promise<void>((resolve, reject) => {
      let failed = false;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        reject(err);
        setImmediate(() => parser.abort(err as Error));
      };
      const parser: Parser = new Parser({
        strict: true,
        onReadEntry: (entry: ReadEntry) => {
          if (failed) return entry.resume();
          try {
            const p = cleanPath(entry.path, name);
            const base = p.slice(p.lastIndexOf('/') + 1);
            const dir = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
            if (base === '.wh..wh..opq') {
              opaque.push(dir);
              return entry.resume();
            }
            if (base.startsWith('.wh.')) {
              this.removeTree(cleanPath(`${dir}/${base.slice(4)}`, name));
              return entry.resume();
            }
            if (p === '') return entry.resume();
            const mode = (entry.mode ?? 0o644) & 0o7777;
            if (entry.type === 'Directory') {
              this.ensureParents(p, name);
              const old = this.tree.get(p);
              if (old && old.type !== 'dir') this.removeTree(p);
              this.tree.set(p, { type: 'dir', mode });
              thisLayer.add(p);
              this.count(name);
              return entry.resume();
            }
            if (entry.type === 'SymbolicLink' || entry.type === 'Link' || entry.type === 'File' || entry.type === 'OldFile' || entry.type === 'ContiguousFile') {
              this.ensureParents(p, name);
              const old = this.tree.get(p);
              if (old) this.removeTree(p);
              thisLayer.add(p);
              if (entry.type === 'SymbolicLink') {
                this.tree.set(p, { type: 'symlink', target: entry.linkpath ?? '' });
                this.count(name);
                return entry.resume();
              }
              if (entry.type === 'Link') {
                this.tree.set(p, { type: 'hardlink', target: cleanPath(entry.linkpath ?? '', name), mode });
                this.count(name);
                return entry.resume();
              }
              if (this.bytes + entry.size > this.limits.maxUnpackedBytes) {
                throw new ImageError('IMAGE_TOO_LARGE', `the image unpacks to more than ${this.limits.maxUnpackedBytes} bytes (at ${p} in layer ${name}; MAYFLY_IMAGE_MAX_UNPACKED_BYTES)`);
              }
              const chunks: Buffer[] = [];
              entry.on('data', (c: Buffer) => chunks.push(c));
              entry.on('end', () => {
                if (failed) return;
                const data = Buffer.concat(chunks);
                this.bytes += data.length;
                this.tree.set(p, { type: 'file', mode, data });
                try {
                  this.count(name);
                } catch (err) {
                  fail(err);
                }
              });
              return;
            }
            // Devices, FIFOs, pax/GNU metadata entries: nothing to unpack into an initramfs.
            entry.resume();
          } catch (err) {
            fail(err);
            entry.resume();
          }
        },
      });
      parser.on('error', (err: Error) => fail(new ImageError('IMAGE_LAYER_UNSUPPORTED', `layer ${name} is not a valid tar (or tar.gz): ${err.message}`)));
      parser.on('warn', (code: string, message: string) => {
        if (code !== 'TAR_ENTRY_INFO') fail(new ImageError('IMAGE_LAYER_UNSUPPORTED', `layer ${name} is not a valid tar (or tar.gz): ${message}`));
      });
      parser.on('end', () => {
        if (!failed) resolve();
      });
      parser.end(layer);
    });
    // An opaque directory hides what lower layers put in it (this layer's entries stay).
    for (const dir of opaque) {
      const prefix = dir === '' ? '' : `${dir}/`;
      for (const [k, n] of this.tree) {
        if (k.startsWith(prefix) && k !== dir && !thisLayer.has(k)) {
          if (n.type === 'file') this.bytes -= n.data.length;
          this.tree.delete(k);
        }
      }
    }
  }

  has(p: string): boolean {
    return this.tree.has(p);
  }

  /** The tree as a gzip'd cpio under rootfs/ (plus dev, proc, tmp mount points when the image lacks them). */
  async finish(): Promise<Rootfs> {
    for (const [p, mode] of [['dev', 0o755], ['proc', 0o555], ['tmp', 0o1777]] as const) {
      if (!this.tree.has(p)) this.tree.set(p, { type: 'dir', mode });
    }
    const names = [...this.tree.keys()].sort((a, b) => {
      const pa = a.split('/');
      const pb = b.split('/');
      for (let i = 0; i < Math.min(pa.length, pb.length); i++) if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
      return pa.length - pb.length;
    });
    const chunks: Buffer[] = [];
    const pad = (n: number) => (4 - (n % 4)) % 4;
    let ino = 1;
    let unpacked = 0;
    chunks.push(cpioHeader({ ino: ino++, mode: S_IFDIR | 0o755, nlink: 2, filesize: 0, name: 'rootfs' }));
    for (const p of names) {
      let n = this.tree.get(p)!;
      if (n.type === 'hardlink') {
        const t = this.tree.get(n.target);
        if (!t || t.type !== 'file') {
          throw new ImageError('IMAGE_LAYER_UNSAFE', `the hard link "${p}" points at "${n.target}", which is not a file of the image; the image is refused`);
        }
        n = { type: 'file', mode: n.mode, data: t.data };
        unpacked += t.data.length;
        if (unpacked > this.limits.maxUnpackedBytes) {
          throw new ImageError('IMAGE_TOO_LARGE', `the image unpacks to more than ${this.limits.maxUnpackedBytes} bytes (MAYFLY_IMAGE_MAX_UNPACKED_BYTES)`);
        }
      } else if (n.type === 'file') unpacked += n.data.length;
      const name = `rootfs/${p}`;
      if (n.type === 'dir') {
        chunks.push(cpioHeader({ ino: ino++, mode: S_IFDIR | n.mode, nlink: 2, filesize: 0, name }));
      } else if (n.type === 'symlink') {
        const t = Buffer.from(n.target);
        chunks.push(cpioHeader({ ino: ino++, mode: S_IFLNK | 0o777, nlink: 1, filesize: t.length, name }), t, Buffer.alloc(pad(t.length)));
      } else {
        chunks.push(cpioHeader({ ino: ino++, mode: S_IFREG | n.mode, nlink: 1, filesize: n.data.length, name }), n.data, Buffer.alloc(pad(n.data.length)));
      }
    }
    chunks.push(cpioHeader({ ino: 0, mode: 0, nlink: 1, filesize: 0, name: 'TRAILER!!!' }));
    const cpioGz = await gzip(Buffer.concat(chunks), { level: 6 });
    return { cpioGz, sha256: createHash('sha256').update(cpioGz).digest('hex'), files: names.length, unpackedBytes: unpacked };
  }
}
