/**
 * A function package → one bundled ES module, off the invocation path:
 * archive bytes → safe extraction (extract.ts) → dependency policy and
 * `npm ci --omit=dev --ignore-scripts` (install.ts) → native-addon and size
 * checks (scan.ts) → esbuild bundle with source map (bundle.ts). Each step
 * that fails throws a PackageError naming the cause; the work folder is always
 * removed. The heavy parts run in child processes (npm, esbuild's service) and
 * zlib's thread pool, so the caller's event loop keeps serving. At most
 * `concurrency` builds run at once; a few more wait, beyond that BUILDER_BUSY.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { MayflyConfig } from '../../contracts/config.js';
import { bundle } from './bundle.js';
import { PackageError } from './errors.js';
import { extractPackage, type ArchiveFormat } from './extract.js';
import { checkDependencies, npmCi, readPackageJson } from './install.js';
import { scanTree } from './scan.js';

export interface PackageBuilderOptions {
  /** Work folders (`builds/`) and the npm cache (`npm/`) go here. */
  cacheDir: string;
  maxPackageBytes: number;
  maxFiles: number;
  maxUnpackedBytes: number;
  maxBundleBytes: number;
  npmTimeoutMs: number;
  npmRegistry?: string;
  concurrency: number;
}

export type BuildReport = {
  format: ArchiveFormat;
  /** Relative path of the handler's file in the package. */
  entry: string;
  installed: boolean;
  files: number;
  bytes: number;
  bundleBytes: number;
  extractMs: number;
  installMs: number;
  bundleMs: number;
  totalMs: number;
};

export interface BuiltFunction {
  /** The bundle: what is stored (content-addressed) and what the guest loads. */
  code: string;
  /** Export name for the agent. */
  handler: string;
  report: BuildReport;
}

export function packageBuilderOptions(config: MayflyConfig): PackageBuilderOptions {
  return {
    cacheDir: config.MAYFLY_CACHE_DIR,
    maxPackageBytes: config.MAYFLY_PACKAGE_MAX_BYTES,
    maxFiles: config.MAYFLY_PACKAGE_MAX_FILES,
    maxUnpackedBytes: config.MAYFLY_PACKAGE_MAX_UNPACKED_BYTES,
    maxBundleBytes: config.MAYFLY_MAX_BUNDLE_BYTES,
    npmTimeoutMs: config.MAYFLY_NPM_TIMEOUT_MS,
    ...(config.MAYFLY_NPM_REGISTRY ? { npmRegistry: config.MAYFLY_NPM_REGISTRY } : {}),
    concurrency: config.MAYFLY_PACKAGE_BUILDS,
  };
}

export class PackageBuilder {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly opts: PackageBuilderOptions) {}

  async build(archive: Buffer, handler: string): Promise<BuiltFunction> {
    if (archive.length > this.opts.maxPackageBytes) {
      throw new PackageError('PACKAGE_TOO_LARGE', `the package archive is ${archive.length} bytes, above the limit of ${this.opts.maxPackageBytes} bytes (MAYFLY_PACKAGE_MAX_BYTES)`);
    }
    await this.acquire();
    try {
      return await this.buildNow(archive, handler);
    } finally {
      this.release();
    }
  }

  private async acquire(): Promise<void> {
    if (this.running < this.opts.concurrency) {
      this.running++;
      return;
    }
    if (this.waiting.length >= this.opts.concurrency * 4) {
      throw new PackageError('BUILDER_BUSY', `${this.running} package builds are running and ${this.waiting.length} waiting on this gateway; retry in a minute`);
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  private async buildNow(archive: Buffer, handler: string): Promise<BuiltFunction> {
    const o = this.opts;
    const started = Date.now();
    const work = path.join(o.cacheDir, 'package-builds', `${process.pid}-${randomBytes(6).toString('hex')}`);
    fs.mkdirSync(work, { recursive: true, mode: 0o700 });
    try {
      const { root: extracted, format } = await extractPackage(archive, path.join(work, 'pkg'), { maxFiles: o.maxFiles, maxUnpackedBytes: o.maxUnpackedBytes });
      const root = fs.realpathSync(extracted);
      const extractMs = Date.now() - started;
      scanTree(root, o.maxUnpackedBytes); // native addons shipped in the archive
      const pkg = readPackageJson(root);
      const lock = checkDependencies(root, pkg, o.npmRegistry);
      let installMs = 0;
      if (lock) {
        installMs = await npmCi(root, { cacheDir: path.join(o.cacheDir, 'npm'), timeoutMs: o.npmTimeoutMs, ...(o.npmRegistry ? { registry: o.npmRegistry } : {}) });
      }
      const tree = scanTree(root, o.maxUnpackedBytes);
      const t0 = Date.now();
      const main = typeof pkg?.main === 'string' ? pkg.main.replace(/\.(c|m)?(j|t)s$/, '') : undefined;
      const b = await bundle(root, work, handler, main, o.maxBundleBytes);
      const bundleMs = Date.now() - t0;
      return {
        code: b.code,
        handler: b.exportName,
        report: {
          format,
          entry: b.entry,
          installed: lock !== null,
          files: tree.files,
          bytes: tree.bytes,
          bundleBytes: Buffer.byteLength(b.code),
          extractMs,
          installMs,
          bundleMs,
          totalMs: Date.now() - started,
        },
      };
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
}
