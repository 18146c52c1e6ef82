/**
 * The build of one package, in the calling thread (the builder runs it in a
 * piscina worker thread, build-worker.ts): archive → safe extraction
 * (extract.ts) → dependency policy and `npm ci` (install.ts) → native-addon and
 * size checks (scan.ts) → esbuild bundle (bundle.ts). The work folder is always
 * removed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { bundle } from './bundle.js';
import { extractPackage, type ArchiveFormat } from './extract.js';
import { checkDependencies, npmCi, readPackageJson } from './install.js';
import { scanTree } from './scan.js';

export interface PackageBuilderOptions {
  /** Work folders (`package-builds/`) and the npm cache (`npm/`) go here. */
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

export async function buildPackage(archive: Buffer, handler: string, o: PackageBuilderOptions): Promise<BuiltFunction> {
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
