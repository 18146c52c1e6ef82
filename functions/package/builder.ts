/**
 * A function package → one bundled ES module, off the invocation path and off
 * the caller's event loop: each build runs in a piscina worker thread
 * (build-worker.ts → build-steps.ts: extraction, `npm ci` in a child process,
 * scans, esbuild). Every failure the user can fix is a PackageError naming the
 * cause. At most `concurrency` builds run at once; a few more wait, beyond that
 * BUILDER_BUSY.
 *
 * Piscina loads the COMPILED worker (dist/functions/package/build-worker.js):
 * from dist it is the sibling of this file; imported from the .ts source
 * (vitest), it is looked up at <project>/dist/functions/package/ (npm test
 * compiles first, in pretest).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Piscina } from 'piscina';
import type { MayflyConfig } from '../../contracts/config.js';
import type { BuildOutcome, BuildTask } from './build-worker.js';
import type { BuiltFunction, PackageBuilderOptions } from './build-steps.js';
import { PackageError } from './errors.js';

export type { BuildReport, BuiltFunction, PackageBuilderOptions } from './build-steps.js';

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

/** The compiled worker file piscina loads (see the header comment). */
function workerFile(): URL {
  const here = fileURLToPath(import.meta.url);
  const sibling = new URL('./build-worker.js', import.meta.url);
  if (here.endsWith('.js') && existsSync(sibling)) return sibling;
  const compiled = path.join(path.resolve(path.dirname(here), '..', '..'), 'dist', 'functions', 'package', 'build-worker.js');
  if (!existsSync(compiled)) throw new Error(`package builder worker ${compiled} is missing: compile first (npx tsc -p tsconfig.json)`);
  return pathToFileURL(compiled);
}

export class PackageBuilder {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private pool: Piscina | null = null;

  constructor(readonly opts: PackageBuilderOptions) {}

  async build(archive: Buffer, handler: string): Promise<BuiltFunction> {
    if (archive.length > this.opts.maxPackageBytes) {
      throw new PackageError('PACKAGE_TOO_LARGE', `the package archive is ${archive.length} bytes, above the limit of ${this.opts.maxPackageBytes} bytes (MAYFLY_PACKAGE_MAX_BYTES)`);
    }
    await this.acquire();
    try {
      this.pool ??= new Piscina({ filename: workerFile().href, minThreads: 0, maxThreads: this.opts.concurrency, idleTimeout: 10_000 });
      const task: BuildTask = { archive: new Uint8Array(archive), handler, opts: this.opts };
      const out = (await this.pool.run(task)) as BuildOutcome;
      if (!out.ok) throw new PackageError(out.code, out.message, out.file);
      return out.built;
    } finally {
      this.release();
    }
  }

  /** Ends the worker threads (a gateway that stops; tests). */
  async close(): Promise<void> {
    await this.pool?.close();
    this.pool = null;
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
}
