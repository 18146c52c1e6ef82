/**
 * Piscina worker of the image builder: the CPU- and IO-heavy steps (hashing
 * ~100 MB of inputs, writing and compressing the initramfs) run here, off the
 * caller's event loop. Each named export is one task type (`pool.run(arg, { name })`).
 *
 * Loaded by piscina from the COMPILED file (dist/functions/image/image-worker.js):
 * see workerFile() in build.ts.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MessagePort } from 'node:worker_threads';
import { createGzip, constants as zlibConstants } from 'node:zlib';
import { cpioChunks, cpioSize, type CpioEntry } from './cpio.js';

export type Compression = 'lz4' | 'gzip' | 'zstd' | 'none';

/** sha256 (hex) of a file's bytes. */
export async function hashFile(arg: { path: string }): Promise<{ path: string; sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(arg.path, { highWaterMark: 1 << 20 })) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { path: arg.path, sha256: h.digest('hex'), bytes };
}

export interface WriteImageTask {
  entries: CpioEntry[];
  outPath: string;
  compression: Compression;
  /** Receives { done, total } (uncompressed cpio bytes) every 5% (at least 4 MiB apart), then a final one. */
  port?: MessagePort;
}

export interface WriteImageResult {
  rootfsBytes: number;
  initrdBytes: number;
  sha256: string;
}

/** Writes the newc archive of `entries`, compressed, to `outPath`. */
export async function writeImage(task: WriteImageTask): Promise<WriteImageResult> {
  const total = cpioSize(task.entries);
  let lastReport = 0;
  const step = Math.max(4 << 20, Math.ceil(total / 20));
  const report = (done: number) => {
    if (done - lastReport >= step || done === total) {
      lastReport = done;
      task.port?.postMessage({ done, total });
    }
  };
  const source = Readable.from(cpioChunks(task.entries, report), { objectMode: false });

  // Hash what lands on disk while writing it (manifest / verification).
  const h = createHash('sha256');
  let outBytes = 0;
  const file = createWriteStream(task.outPath);
  const sink = async function* (chunks: AsyncIterable<Buffer>) {
    for await (const c of chunks) {
      h.update(c);
      outBytes += c.length;
      yield c;
    }
  };

  if (task.compression === 'none') {
    await pipeline(source, sink, file);
  } else if (task.compression === 'gzip') {
    await pipeline(source, createGzip({ level: zlibConstants.Z_BEST_COMPRESSION, memLevel: 9 }), sink, file);
  } else if (task.compression === 'zstd') {
    // -19 without --long: the kernel's streaming unzstd needs the window to stay small (8 MiB at -19).
    await pipeThrough('zstd', ['-19', '-T2', '-q', '-c'], source, sink, file);
  } else {
    // The kernel's initramfs unpacker only reads the LEGACY lz4 frame: `-l`.
    // -9 (LZ4HC) costs build time once and makes a smaller initrd; decompression speed is the same.
    const lz4 = spawn('lz4', ['-l', '-9', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    lz4.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve, reject) => {
      lz4.on('error', (err) => reject(new Error(`cannot run lz4 (install the lz4 package): ${err.message}`)));
      lz4.on('close', (code) => resolve(code));
    });
    const [, , code] = await Promise.all([
      pipeline(source, lz4.stdin as Writable),
      pipeline(lz4.stdout, sink, file),
      exited,
    ]);
    if (code !== 0) throw new Error(`lz4 -l exited with ${code}: ${stderr.trim()}`);
  }
  if (lastReport !== total) task.port?.postMessage({ done: total, total });
  task.port?.close();
  return { rootfsBytes: total, initrdBytes: outBytes, sha256: h.digest('hex') };
}

/** Pipes `source` through an external compressor into `sink` -> `file`. */
async function pipeThrough(
  cmd: string,
  args: string[],
  source: Readable,
  sink: (chunks: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>,
  file: Writable,
): Promise<void> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (err) => reject(new Error(`cannot run ${cmd} (install the ${cmd} package): ${err.message}`)));
    child.on('close', (code) => resolve(code));
  });
  const [, , code] = await Promise.all([pipeline(source, child.stdin as Writable), pipeline(child.stdout, sink, file), exited]);
  if (code !== 0) throw new Error(`${cmd} exited with ${code}: ${stderr.trim()}`);
}
