/**
 * Piscina worker of the package builder: runs one build (build-steps.ts) off
 * the gateway's event loop: extraction, the scans of node_modules and esbuild's
 * API all run in this thread; npm is a child process of it. A PackageError is
 * returned as data (errors lose their class and fields crossing threads).
 * Loaded by piscina from the COMPILED file (dist/functions/package/build-worker.js).
 */
import { buildPackage, type BuiltFunction, type PackageBuilderOptions } from './build-steps.js';
import { PackageError, type PackageErrorCode } from './errors.js';

export interface BuildTask {
  archive: Uint8Array;
  handler: string;
  opts: PackageBuilderOptions;
}

export type BuildOutcome = { ok: true; built: BuiltFunction } | { ok: false; code: PackageErrorCode; message: string; file?: string };

export default async function run(task: BuildTask): Promise<BuildOutcome> {
  try {
    return { ok: true, built: await buildPackage(Buffer.from(task.archive.buffer, task.archive.byteOffset, task.archive.byteLength), task.handler, task.opts) };
  } catch (err) {
    if (err instanceof PackageError) return { ok: false, code: err.code, message: err.message, ...(err.file !== undefined ? { file: err.file } : {}) };
    throw err;
  }
}
