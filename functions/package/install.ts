/**
 * Production dependencies of a package: `npm ci --omit=dev --ignore-scripts`
 * (no install script of anyone's package runs on a Mayfly host), with a time
 * limit, the npm cache under the Mayfly cache (warm after the first deploy,
 * `--prefer-offline`), and the package's own `.npmrc` removed (the registry is
 * the operator's). Dependencies must come from the registry: `file:`, `link:`,
 * git and URL specs are refused before npm runs.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PackageError } from './errors.js';

export interface InstallOptions {
  cacheDir: string;
  timeoutMs: number;
  /** npm's registry (MAYFLY_NPM_REGISTRY); npm's own configuration when absent. */
  registry?: string;
}

interface PackageJson {
  dependencies?: Record<string, unknown>;
  main?: unknown;
}

export function readPackageJson(root: string): PackageJson | null {
  const file = path.join(root, 'package.json');
  if (!fs.existsSync(file)) return null;
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as PackageJson;
  } catch (err) {
    throw new PackageError('PACKAGE_INVALID', `package.json is not valid JSON: ${(err as Error).message}`, 'package.json');
  }
}

const NON_REGISTRY_SPEC = /^(file:|link:|portal:|workspace:|git(\+[a-z]+)?:|github:|gitlab:|bitbucket:|gist:|https?:)|^[\w.-]+\/[\w.-]+(#.*)?$/i;

/** The lockfile to use, or an error when dependencies are declared without one; null = nothing to install. */
export function checkDependencies(root: string, pkg: PackageJson | null, registry?: string): string | null {
  const deps = pkg?.dependencies && typeof pkg.dependencies === 'object' ? Object.entries(pkg.dependencies) : [];
  if (deps.length === 0) return null;
  for (const [name, spec] of deps) {
    if (typeof spec !== 'string' || NON_REGISTRY_SPEC.test(spec.trim())) {
      throw new PackageError(
        'DEPENDENCY_NOT_ALLOWED',
        `dependency "${name}": ${JSON.stringify(spec)} is not a registry version; Mayfly installs dependencies from the npm registry only (no file:, link:, git or URL dependencies)`,
        'package.json',
      );
    }
  }
  const lock = ['npm-shrinkwrap.json', 'package-lock.json'].find((f) => fs.existsSync(path.join(root, f)));
  if (!lock) {
    throw new PackageError(
      'LOCKFILE_MISSING',
      `package.json declares ${deps.length} dependenc${deps.length === 1 ? 'y' : 'ies'} but the package has no package-lock.json; run \`npm install\` in the function's folder and include package-lock.json`,
      'package.json',
    );
  }
  let parsed: { packages?: Record<string, { link?: unknown; resolved?: unknown }> };
  try {
    parsed = JSON.parse(fs.readFileSync(path.join(root, lock), 'utf8')) as typeof parsed;
  } catch (err) {
    throw new PackageError('PACKAGE_INVALID', `${lock} is not valid JSON: ${(err as Error).message}`, lock);
  }
  for (const [where, entry] of Object.entries(parsed.packages ?? {})) {
    if (where === '') continue;
    const resolved = typeof entry?.resolved === 'string' ? entry.resolved : '';
    if (entry?.link === true || (resolved !== '' && !fromRegistry(resolved, registry))) {
      throw new PackageError(
        'DEPENDENCY_NOT_ALLOWED',
        `${lock}: "${where}" is ${entry?.link === true ? 'a link to a local folder' : `resolved from ${JSON.stringify(resolved)}`}; Mayfly installs dependencies from the npm registry only (${[...registryHosts(registry)].join(', ')})`,
        lock,
      );
    }
  }
  return lock;
}

/** registry.npmjs.org (npm rewrites it to the configured registry) and the configured registry's host. */
function registryHosts(registry?: string): Set<string> {
  const hosts = new Set(['registry.npmjs.org']);
  if (registry) hosts.add(new URL(registry).host);
  return hosts;
}

/** A lockfile's `resolved` URL must be a tarball of the registry: no other host is ever fetched. */
function fromRegistry(resolved: string, registry?: string): boolean {
  try {
    const u = new URL(resolved);
    return (u.protocol === 'https:' || u.protocol === 'http:') && registryHosts(registry).has(u.host);
  } catch {
    return false;
  }
}

/** The last lines of npm's output that say what went wrong. */
function npmErrorSummary(output: string): string {
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => l.startsWith('npm error') && !/A complete log of this run|^npm error\s*$/.test(l));
  return (errors.length ? errors : lines).slice(0, 6).join(' | ').slice(0, 1500);
}

/** Runs npm ci in `root`. Resolves with npm's wall time in ms. */
export function npmCi(root: string, opts: InstallOptions): Promise<number> {
  fs.rmSync(path.join(root, '.npmrc'), { force: true });
  fs.mkdirSync(opts.cacheDir, { recursive: true });
  const args = ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', '--cache', opts.cacheDir];
  if (opts.registry) args.push('--registry', opts.registry);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MAYFLY_') && !k.startsWith('npm_')) env[k] = v;
  env.NODE_ENV = 'production';
  env.npm_config_update_notifier = 'false';
  const started = Date.now();
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout ends npm and everything it started.
    const child = spawn('npm', args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (c: Buffer) => {
      output = (output + c.toString('utf8')).slice(-64 * 1024);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, opts.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new PackageError('INSTALL_FAILED', `could not run npm: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new PackageError('INSTALL_TIMEOUT', `npm ci did not finish within ${opts.timeoutMs} ms (MAYFLY_NPM_TIMEOUT_MS) and was stopped; check the dependencies and the registry, or ask the operator for a longer limit`));
      } else if (code !== 0) {
        reject(new PackageError('INSTALL_FAILED', `npm ci failed (${signal ?? `exit ${code}`}): ${npmErrorSummary(output)}`, 'package-lock.json'));
      } else {
        resolve(Date.now() - started);
      }
    });
  });
}
