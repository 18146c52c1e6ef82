/**
 * The package builder (functions/package/) with real parts: real archives,
 * real `npm ci` against the npm registry (ms@2.1.3, pure JS, 6 KB), real
 * esbuild. Every bad package gets its PackageError code and names its cause.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { PackageBuilder, type PackageBuilderOptions } from '../../functions/package/builder.js';
import { PackageError } from '../../functions/package/errors.js';
import { makeTarGz, makeZip, type ArchiveEntry } from '../helpers/archives.js';

const FIXTURES = path.join(PROJECT_ROOT, 'test', 'fixtures', 'packages');

export async function tarDir(dir: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of tar.create({ gzip: true, cwd: dir, portable: true }, ['.'])) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

let tmp: string;
let opts: PackageBuilderOptions;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mfpkg-'));
  opts = {
    cacheDir: path.join(tmp, 'cache'),
    maxPackageBytes: 1024 * 1024,
    maxFiles: 50,
    maxUnpackedBytes: 4 * 1024 * 1024,
    maxBundleBytes: 2 * 1024 * 1024,
    npmTimeoutMs: 60_000,
    concurrency: 2,
  };
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Loads a bundle the way the guest agent does (file + import, source maps on) and calls its handler. */
async function runBundle(code: string, exportName: string, body: string): Promise<unknown> {
  const dir = fs.mkdtempSync(path.join(tmp, 'run-'));
  const file = path.join(dir, 'index.mjs');
  fs.writeFileSync(file, code);
  process.setSourceMapsEnabled(true);
  const mod = (await import(pathToFileURL(file).href)) as Record<string, (e: unknown) => Promise<unknown>>;
  return mod[exportName]!({ body });
}

async function expectPackageError(p: Promise<unknown>, code: string, message: RegExp): Promise<PackageError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PackageError);
  expect((err as PackageError).code).toBe(code);
  expect((err as PackageError).message).toMatch(message);
  return err as PackageError;
}

const okFile: ArchiveEntry = { path: 'index.mjs', content: 'export const handler = async () => "ok";\n' };

describe('package builder', () => {
  it('installs a real npm dependency and bundles it into one module (tar.gz of a folder)', async () => {
    const b = new PackageBuilder(opts);
    const built = await b.build(await tarDir(path.join(FIXTURES, 'with-dep')), 'src/index.handler');
    expect(built.handler).toBe('handler');
    expect(built.report.installed).toBe(true);
    expect(built.report.entry).toBe('src/index.js');
    expect(built.code).not.toMatch(/from ["']ms["']/); // bundled, not imported
    expect(await runBundle(built.code, 'handler', '1h')).toEqual({ input: '1h', ms: 3_600_000 });
    // The npm cache is warm now: the same package installs with the registry unreachable (port 9 on loopback is closed).
    const offline = new PackageBuilder({ ...opts, npmRegistry: 'http://127.0.0.1:9/' });
    const again = await offline.build(await tarDir(path.join(FIXTURES, 'with-dep')), 'src/index.handler');
    expect(again.code).toBe(built.code);
  }, 120_000);

  it('compiles TypeScript and maps stack traces to the .ts file and line', async () => {
    const built = await new PackageBuilder(opts).build(await tarDir(path.join(FIXTURES, 'typescript')), 'src/index.handler');
    expect(built.report.installed).toBe(false);
    expect(await runBundle(built.code, 'handler', 'ts')).toEqual({ hello: 'ts', length: 2 });
    const logged: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void logged.push(String(m)));
    const err = (await runBundle(built.code, 'handler', 'fail').catch((e: unknown) => e)) as Error;
    spy.mockRestore();
    expect(err.message).toBe('typed failure');
    expect(err.stack).toMatch(/src\/index\.ts:12:11/);
    // ... and the wrapper wrote that stack to the call's logs (stderr) too.
    expect(logged.join('\n')).toMatch(/Error: typed failure\n\s+at .*src\/index\.ts:12:11/);
  }, 60_000);

  it('deploys TypeScript with a type error (types are stripped, not checked)', async () => {
    const pkg = makeTarGz([{ path: 'index.ts', content: 'const n: number = "not a number";\nexport const handler = async (): Promise<string> => n;\n' }]);
    const built = await new PackageBuilder(opts).build(pkg, 'index.handler');
    expect(await runBundle(built.code, 'handler', '')).toBe('not a number');
  }, 60_000);

  it('accepts .zip, .mts/.cts handlers, CommonJS handlers, and a single top-level folder', async () => {
    const b = new PackageBuilder(opts);
    const zip = makeZip([{ path: 'fn/', type: 'dir' }, { path: 'fn/package.json', content: '{}' }, { path: 'fn/app.mts', content: 'export async function main(e: {body: string}) { return e.body.toUpperCase(); }\n' }]);
    const built = await b.build(zip, 'app.main');
    expect(await runBundle(built.code, 'main', 'zip')).toBe('ZIP');
    const cjs = makeTarGz([{ path: 'lib/h.cts', content: 'const os = require("node:os");\nexports.handler = async (e: {body: string}) => e.body + typeof os.cpus;\n' }]);
    const c = await b.build(cjs, 'lib/h.handler');
    expect(await runBundle(c.code, 'handler', 'x')).toBe('xfunction');
    const dflt = makeTarGz([{ path: 'index.js', content: 'module.exports = async (e) => "default " + e.body;\n' }]);
    expect(await runBundle((await b.build(dflt, 'index.handler')).code, 'handler', 'cjs')).toBe('default cjs');
  }, 60_000);

  const bad: Array<[string, () => Buffer, string, string, RegExp]> = [
    ['not an archive', () => Buffer.from('hello'), 'index.handler', 'PACKAGE_INVALID', /not a \.tar\.gz, \.tar or \.zip/],
    ['a corrupt gzip', () => makeTarGz([okFile]).subarray(0, 30), 'index.handler', 'PACKAGE_INVALID', /not a valid/],
    ['../ in a tar path', () => makeTarGz([okFile, { path: '../evil.js', content: 'x' }]), 'index.handler', 'PACKAGE_PATH_TRAVERSAL', /"\.\.\/evil\.js" has a "\.\." path segment/],
    ['an absolute tar path', () => makeTarGz([{ path: '/etc/cron.d/x', content: 'x' }]), 'index.handler', 'PACKAGE_PATH_TRAVERSAL', /"\/etc\/cron\.d\/x" has an absolute path/],
    ['../ in a zip path', () => makeZip([okFile, { path: 'a/../../evil.js', content: 'x' }]), 'index.handler', 'PACKAGE_PATH_TRAVERSAL', /"a\/\.\.\/\.\.\/evil\.js"/],
    ['a tar symlink out', () => makeTarGz([okFile, { path: 'link', type: 'symlink', content: '../../../etc/passwd' }]), 'index.handler', 'PACKAGE_PATH_TRAVERSAL', /symlink "link" points at "\.\.\/\.\.\/\.\.\/etc\/passwd", outside/],
    ['an absolute zip symlink', () => makeZip([okFile, { path: 'link', type: 'symlink', content: '/etc/passwd' }]), 'index.handler', 'PACKAGE_PATH_TRAVERSAL', /symlink "link" points at the absolute path/],
    ['a hard link', () => makeTarGz([okFile, { path: 'h', type: 'hardlink', content: 'index.mjs' }]), 'index.handler', 'PACKAGE_UNSUPPORTED_ENTRY', /hard link/],
    ['a FIFO', () => makeTarGz([okFile, { path: 'p', type: 'fifo' }]), 'index.handler', 'PACKAGE_UNSUPPORTED_ENTRY', /"p" is a FIFO entry/],
    ['too many files', () => makeTarGz(Array.from({ length: 51 }, (_, i) => ({ path: `f${i}.js`, content: '' }))), 'index.handler', 'PACKAGE_TOO_LARGE', /more than 50 entries \(MAYFLY_PACKAGE_MAX_FILES\)/],
    ['too large unpacked', () => makeTarGz([okFile, { path: 'big.bin', content: Buffer.alloc(5 * 1024 * 1024) }]), 'index.handler', 'PACKAGE_TOO_LARGE', /MAYFLY_PACKAGE_MAX_UNPACKED_BYTES/],
    ['a missing handler file', () => makeTarGz([okFile]), 'src/main.handler', 'HANDLER_NOT_FOUND', /no file src\/main\.ts.*top level holds: index\.mjs/],
    ['a missing handler export', () => makeTarGz([okFile]), 'index.run', 'HANDLER_NOT_FOUND', /index\.mjs exports no "run" \(its exports: handler\)/],
    ['dependencies without a lockfile', () => makeTarGz([okFile, { path: 'package.json', content: '{"dependencies":{"ms":"2.1.3"}}' }]), 'index.handler', 'LOCKFILE_MISSING', /no package-lock\.json; run `npm install`/],
    ['a file: dependency', () => makeTarGz([okFile, { path: 'package.json', content: '{"dependencies":{"x":"file:../../etc"}}' }]), 'index.handler', 'DEPENDENCY_NOT_ALLOWED', /"x": "file:\.\.\/\.\.\/etc" is not a registry version/],
    ['a lockfile entry from another host', () => makeTarGz([okFile, { path: 'package.json', content: '{"dependencies":{"ms":"2.1.3"}}' }, { path: 'package-lock.json', content: JSON.stringify({ lockfileVersion: 3, packages: { '': {}, 'node_modules/ms': { version: '2.1.3', resolved: 'http://169.254.169.254/latest/ms.tgz' } } }) }]), 'index.handler', 'DEPENDENCY_NOT_ALLOWED', /"node_modules\/ms" is resolved from "http:\/\/169\.254\.169\.254\/latest\/ms\.tgz"; .*registry only \(registry\.npmjs\.org\)/],
    ['a native addon', () => makeTarGz([okFile, { path: 'node_modules/fast/build/Release/fast.node', content: '\x7fELF' }]), 'index.handler', 'NATIVE_ADDON', /node_modules\/fast\/build\/Release\/fast\.node is a native addon/],
    ['a TypeScript syntax error', () => makeTarGz([{ path: 'src/index.ts', content: 'export const handler = async () => {\n  const x: number = ;\n};\n' }]), 'src/index.handler', 'SYNTAX_ERROR', /src\/index\.ts:2:\d+: Unexpected ";"/],
    ['an import that is not installed', () => makeTarGz([{ path: 'index.js', content: 'import left from "left-pad";\nexport const handler = () => left("a", 3);\n' }]), 'index.handler', 'BUILD_FAILED', /index\.js:1:\d+: Could not resolve "left-pad".*add it to package\.json dependencies/],
  ];
  for (const [what, make, handler, code, message] of bad) {
    it(`refuses ${what} with ${code}`, async () => {
      await expectPackageError(new PackageBuilder(opts).build(make(), handler), code, message);
    });
  }

  it('refuses an archive above the size limit before reading it', async () => {
    await expectPackageError(new PackageBuilder({ ...opts, maxPackageBytes: 1024 }).build(Buffer.alloc(2048), 'index.handler'), 'PACKAGE_TOO_LARGE', /above the limit of 1024 bytes \(MAYFLY_PACKAGE_MAX_BYTES\)/);
  });

  it('reports an install that fails (a version the registry does not have) with npm\'s reason', async () => {
    const lock = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'with-dep', 'package-lock.json'), 'utf8'));
    lock.packages['node_modules/ms'].resolved = 'https://registry.npmjs.org/ms/-/ms-0.0.999.tgz';
    lock.packages['node_modules/ms'].version = '0.0.999';
    lock.packages['node_modules/ms'].integrity = 'sha512-AAAA';
    const pkg = makeTarGz([
      { path: 'index.js', content: 'import ms from "ms";\nexport const handler = () => ms("1s");\n' },
      { path: 'package.json', content: '{"dependencies":{"ms":"0.0.999"}}' },
      { path: 'package-lock.json', content: JSON.stringify(lock) },
    ]);
    await expectPackageError(new PackageBuilder(opts).build(pkg, 'index.handler'), 'INSTALL_FAILED', /npm ci failed \(exit \d+\): npm error/);
  }, 120_000);

  it('stops an install that runs too long (a registry that never answers) with INSTALL_TIMEOUT', async () => {
    const sockets = new Set<import('node:net').Socket>();
    const stall = http.createServer(() => {
      /* never answers */
    });
    stall.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => stall.listen(0, '127.0.0.1', r));
    const registry = `http://127.0.0.1:${(stall.address() as AddressInfo).port}/`;
    try {
      const started = Date.now();
      await expectPackageError(
        new PackageBuilder({ ...opts, cacheDir: path.join(tmp, 'cold'), npmTimeoutMs: 3000, npmRegistry: registry }).build(await tarDir(path.join(FIXTURES, 'with-dep')), 'src/index.handler'),
        'INSTALL_TIMEOUT',
        /did not finish within 3000 ms \(MAYFLY_NPM_TIMEOUT_MS\)/,
      );
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => stall.close(r));
    }
  }, 60_000);

  it('leaves no work folder behind, after success or failure', () => {
    const builds = path.join(opts.cacheDir, 'package-builds');
    expect(fs.existsSync(builds) ? fs.readdirSync(builds) : []).toEqual([]);
  });
});
