/**
 * Function packages and the `mayfly` CLI against a whole real platform (auth on,
 * real VMs, a real npm install from the registry): a package with a dependency,
 * a TypeScript function, a stack file with three functions, `logs --follow`,
 * and every bad package answered with its error while the previous version
 * keeps serving. The CLI finds the admin password in the platform's data dir,
 * like on the machine that runs `npm start`.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo, Socket } from 'node:net';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { makeTarGz } from '../helpers/archives.js';
import { runCli, startCli } from '../helpers/cli.js';
import { TestPlatform } from '../helpers/platform.js';

const FIXTURES = path.join(PROJECT_ROOT, 'test', 'fixtures', 'packages');

let p: TestPlatform;
let tmp: string;
let env: Record<string, string>;

async function tarDir(dir: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of tar.create({ gzip: true, cwd: dir, portable: true }, ['.'])) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('base64');
}

function auth(): string {
  const password = fs.readFileSync(path.join(p.dir, 'data', 'admin-password'), 'utf8').trim();
  return `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`;
}

async function put(gateway: string, body: Record<string, unknown>): Promise<{ status: number; body: { error: string; code: string; file?: string } }> {
  const r = await fetch(`${gateway}/system/functions`, { method: 'PUT', headers: { authorization: auth(), 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as { error: string; code: string } };
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mfcli-'));
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_AUTH: 'on', MAYFLY_POOL_SIZE: '1' } });
  await p.waitForWorkers(['w1'], 1);
  env = { MAYFLY_GATEWAY: p.gatewayUrl, MAYFLY_DATA_DIR: path.join(p.dir, 'data'), XDG_CONFIG_HOME: path.join(tmp, 'config') };
}, 240_000);

afterAll(async () => {
  await p?.stop();
  expect(p ? p.qemuPids() : []).toEqual([]);
  fs.rmSync(tmp, { recursive: true, force: true });
}, 120_000);

describe('packages and the mayfly CLI on a real platform', () => {
  it('deploys a folder with a real npm dependency (installed at deploy) and invokes it in a VM', async () => {
    const d = await runCli(['deploy', path.join(FIXTURES, 'with-dep'), '--name', 'dep', '--handler', 'src/index.handler'], env);
    expect(d.stderr).toBe('');
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(/^created dep \(version 1, built in [\d.]+ s \(npm ci [\d.]+ s\), bundle \d+ bytes\) in [\d.]+ s\n$/);
    const i = await runCli(['invoke', 'dep', '--data', '1h'], env);
    expect(i.code).toBe(0);
    expect(JSON.parse(i.stdout)).toEqual({ input: '1h', ms: 3_600_000 });
  }, 240_000);

  it('deploys a TypeScript function; its error stack in the logs points at the .ts file and line', async () => {
    const d = await runCli(['deploy', path.join(FIXTURES, 'typescript'), '--name', 'ts', '--handler', 'src/index.handler'], env);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(/^created ts \(version 1, built in/);
    const ok = await runCli(['invoke', 'ts', '--data', 'vm'], env);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ hello: 'vm', length: 2 });
    const bad = await runCli(['invoke', 'ts', '--data', 'fail', '--json'], env);
    expect(bad.code).toBe(1); // the function answered with an error
    const res = JSON.parse(bad.stdout) as { status: number; body: string; callId: string };
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'typed failure', code: 'FUNCTION_ERROR' });
    const logs = await runCli(['logs', 'ts'], env);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toMatch(/Error: typed failure/);
    expect(logs.stdout).toMatch(/src\/index\.ts:12:11/);
  }, 240_000);

  it('logs --follow shows a line logged by a call made after it started', async () => {
    const follow = startCli(['logs', 'dep', '--follow'], env);
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const marker = `follow-${Date.now()}`;
      const i = await runCli(['invoke', 'dep', '--data', marker], env);
      expect(i.code).toBe(0);
      await p.waitFor(() => follow.output().includes(`ms parsing ${marker}`), 30_000, 'the followed log line');
      expect(follow.proc.exitCode).toBeNull();
    } finally {
      await follow.stop();
    }
  }, 120_000);

  it('deploys a stack file with three functions (file, TypeScript file, folder) and says what changed', async () => {
    const dir = path.join(tmp, 'stack');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(
      path.join(dir, 'plain.mjs'),
      'export async function handler(event) { return { plain: event.body, env: process.env.GREETING, q: event.query.k, h: event.headers["x-k"], m: event.method, p: event.path }; }\n',
    );
    fs.writeFileSync(path.join(dir, 'typed.ts'), 'export const handler = async (e: { body: string }): Promise<number> => e.body.length;\n');
    const stack = `version: 1.0
provider:
  name: mayfly
  gateway: ${p.gatewayUrl}
functions:
  s-plain:
    lang: node
    handler: ./plain.mjs
    environment:
      GREETING: hi
    limits:
      memory: 160Mi
    timeout: 20s
    labels:
      team: a
  s-typed:
    lang: typescript
    handler: ./typed.ts
  s-folder:
    lang: node
    handler: ${path.join(FIXTURES, 'with-dep')}
    entrypoint: src/index.handler
    isolation: per-function
`;
    fs.writeFileSync(path.join(dir, 'mayfly.yml'), stack);
    const { MAYFLY_GATEWAY: _g, ...noGatewayEnv } = env; // the gateway comes from the stack file
    const d = await runCli(['deploy', '-f', path.join(dir, 'mayfly.yml')], noGatewayEnv);
    expect(d.stderr).toBe('');
    expect(d.code).toBe(0);
    expect(d.stdout.split('\n').filter(Boolean).map((l) => l.split(' ').slice(0, 2).join(' '))).toEqual(['created s-plain', 'created s-typed', 'created s-folder']);
    const again = await runCli(['deploy', '-f', path.join(dir, 'mayfly.yml'), '--filter', 's-plain'], noGatewayEnv);
    expect(again.stdout).toMatch(/^updated s-plain \(version 2; same code and settings\) in [\d.]+ s\n$/);
    fs.writeFileSync(path.join(dir, 'changed.yml'), stack.replace('memory: 160Mi', 'memory: 192Mi').replace('./typed.ts', './plain.mjs'));
    const changed = await runCli(['deploy', '-f', path.join(dir, 'changed.yml'), '--filter', 's-plain', '--filter', 's-typed'], noGatewayEnv);
    expect(changed.stdout).toMatch(/^updated s-plain \(version 3; changed: memory\)/m);
    expect(changed.stdout).toMatch(/^updated s-typed \(version 2; changed: code, handler\)/m);
    expect((await runCli(['deploy', '-f', path.join(dir, 'mayfly.yml'), '--filter', 's-typed', '--filter', 's-plain'], noGatewayEnv)).code).toBe(0);
    expect(JSON.parse((await runCli(['invoke', 's-plain', '--data', 'x', '--query', 'k=v1', '--header', 'X-K: v2', '--path', 'sub/p'], env)).stdout)).toEqual({
      plain: 'x', env: 'hi', q: 'v1', h: 'v2', m: 'POST', p: '/sub/p',
    });
    // stdin body, and --async: a call id, then its record
    expect(JSON.parse((await runCli(['invoke', 's-plain'], env, { input: 'from stdin' })).stdout)).toMatchObject({ plain: 'from stdin' });
    const queued = await runCli(['invoke', 's-plain', '--async', '--data', 'later'], env);
    expect(queued.code).toBe(0);
    const callId = queued.stdout.trim();
    expect(callId).toMatch(/^[\w-]{8,}$/);
    await p.waitFor(async () => {
      const recs = JSON.parse((await runCli(['calls', 's-plain', '--status', 'succeeded', '--json'], env)).stdout) as Array<{ callId: string; result?: unknown }>;
      return recs.some((r) => r.callId === callId);
    }, 90_000, 'the async call to succeed');
    expect((await runCli(['invoke', 's-typed', '--data', 'four'], env)).stdout.trim()).toBe('4');
    expect(JSON.parse((await runCli(['invoke', 's-folder', '--data', '2s'], env)).stdout)).toEqual({ input: '2s', ms: 2000 });
    const list = JSON.parse((await runCli(['list', '--json'], env)).stdout) as Array<{ name: string; memory: string; timeout: number; isolation: string; labels: Record<string, string> }>;
    expect(list.find((f) => f.name === 's-plain')).toMatchObject({ memory: '160Mi', timeout: 20_000, labels: { team: 'a' } });
    expect(list.find((f) => f.name === 's-folder')?.isolation).toBe('per-function');
    const table = (await runCli(['list'], env)).stdout;
    expect(table).toMatch(/^NAME\s+VERSION\s+RUNTIME/);
    // A stack file with an unknown key: exit 2, the key's path, nothing deployed.
    fs.writeFileSync(path.join(dir, 'bad.yml'), stack.replace('    lang: typescript\n', '    lang: typescript\n    build_args: { X: 1 }\n'));
    const bad = await runCli(['deploy', '-f', path.join(dir, 'bad.yml')], noGatewayEnv);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/functions\.s-typed\.build_args: unknown key \(Mayfly builds packages itself/);
    expect(bad.stdout).toBe('');
  }, 300_000);

  it('answers every bad package with its error; the previous version keeps serving', async () => {
    const before = JSON.parse((await runCli(['describe', 'dep', '--json'], env)).stdout) as { version: number };
    const ok = { path: 'index.mjs', content: 'export const handler = async () => "v2";\n' };
    const cases: Array<[string, string, string, number, string, RegExp]> = [
      ['path traversal', makeTarGz([ok, { path: '../../escape.js', content: 'x' }]).toString('base64'), 'index.handler', 400, 'PACKAGE_PATH_TRAVERSAL', /"\.\.\/\.\.\/escape\.js" has a "\.\." path segment/],
      ['absolute path', makeTarGz([{ path: '/tmp/abs.js', content: 'x' }]).toString('base64'), 'index.handler', 400, 'PACKAGE_PATH_TRAVERSAL', /absolute path/],
      ['symlink out', makeTarGz([ok, { path: 'secrets', type: 'symlink', content: '../../../../root' }]).toString('base64'), 'index.handler', 400, 'PACKAGE_PATH_TRAVERSAL', /symlink "secrets" points at .* outside the package/],
      ['missing handler', makeTarGz([ok]).toString('base64'), 'src/app.handler', 422, 'HANDLER_NOT_FOUND', /no file src\/app\.ts/],
      ['no lockfile', makeTarGz([ok, { path: 'package.json', content: '{"dependencies":{"ms":"2.1.3"}}' }]).toString('base64'), 'index.handler', 422, 'LOCKFILE_MISSING', /no package-lock\.json/],
      ['native addon', makeTarGz([ok, { path: 'node_modules/x/x.node', content: 'ELF' }]).toString('base64'), 'index.handler', 422, 'NATIVE_ADDON', /native addon/],
      ['syntax error', makeTarGz([{ path: 'index.ts', content: 'export const handler = ( => 1;\n' }]).toString('base64'), 'index.handler', 400, 'SYNTAX_ERROR', /index\.ts:1:\d+/],
      ['not an archive', Buffer.from('just text').toString('base64'), 'index.handler', 400, 'PACKAGE_INVALID', /not a \.tar\.gz, \.tar or \.zip/],
    ];
    const lock = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'with-dep', 'package-lock.json'), 'utf8'));
    lock.packages['node_modules/ms'] = { version: '0.0.999', resolved: 'https://registry.npmjs.org/ms/-/ms-0.0.999.tgz', integrity: 'sha512-AAAA' };
    cases.push([
      'install that fails',
      makeTarGz([ok, { path: 'package.json', content: '{"dependencies":{"ms":"0.0.999"}}' }, { path: 'package-lock.json', content: JSON.stringify(lock) }]).toString('base64'),
      'index.handler',
      422,
      'INSTALL_FAILED',
      /npm ci failed/,
    ]);
    for (const [what, pkg, handler, status, code, message] of cases) {
      const r = await put(p.gatewayUrl, { service: 'dep', package: pkg, handler });
      expect({ what, status: r.status, code: r.body.code }).toEqual({ what, status, code });
      expect(r.body.error).toMatch(message);
    }
    // An install that runs too long: a second gateway whose registry never answers, with a 2 s limit.
    const sockets = new Set<Socket>();
    const stall = http.createServer(() => {});
    stall.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => stall.listen(0, '127.0.0.1', r));
    try {
      const slow = await p.startGateway('gateway-slow-npm', {
        MAYFLY_NPM_TIMEOUT_MS: '2000',
        MAYFLY_NPM_REGISTRY: `http://127.0.0.1:${(stall.address() as AddressInfo).port}/`,
        MAYFLY_CACHE_DIR: path.join(tmp, 'cold-cache'),
      });
      const r = await put(slow, { service: 'dep', package: await tarDir(path.join(FIXTURES, 'with-dep')), handler: 'src/index.handler' });
      expect({ status: r.status, code: r.body.code }).toEqual({ status: 422, code: 'INSTALL_TIMEOUT' });
      expect(r.body.error).toMatch(/did not finish within 2000 ms \(MAYFLY_NPM_TIMEOUT_MS\)/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => stall.close(r));
    }
    // Nothing was deployed: same version, and it still answers with the first package's code.
    const after = JSON.parse((await runCli(['describe', 'dep', '--json'], env)).stdout) as { version: number };
    expect(after.version).toBe(before.version);
    const i = await runCli(['invoke', 'dep', '--data', '3s'], env);
    expect(JSON.parse(i.stdout)).toEqual({ input: '3s', ms: 3000 });
  }, 300_000);

  it('new --lang js|ts makes a starter whose test passes and that deploys and answers', async () => {
    const parent = path.join(tmp, 'starters');
    fs.mkdirSync(parent, { recursive: true });
    const js = await runCli(['new', 'starter-js', '--lang', 'js'], env, { cwd: parent });
    expect(js.code).toBe(0);
    expect(js.stdout).toMatch(/next: \(cd starter-js && npm test\) && npx mayfly deploy -f starter-js\/mayfly\.yml/);
    const test = await new Promise<number | null>((resolve) => {
      const c = spawn('npm', ['test', '--silent'], { cwd: path.join(parent, 'starter-js'), stdio: 'ignore' });
      c.on('close', resolve);
    });
    expect(test).toBe(0);
    const ts = await runCli(['new', 'starter-ts', '--lang', 'ts'], env, { cwd: parent });
    expect(ts.code).toBe(0);
    expect(fs.existsSync(path.join(parent, 'starter-ts', 'src', 'index.ts'))).toBe(true);
    for (const name of ['starter-js', 'starter-ts']) {
      const d = await runCli(['deploy', '-f', path.join(parent, name, 'mayfly.yml')], env); // MAYFLY_GATEWAY wins over the file's gateway
      expect(d.stdout).toMatch(new RegExp(`^created ${name} \\(version 1`));
      expect(JSON.parse((await runCli(['invoke', name, '--data', 'new'], env)).stdout)).toEqual({ hello: 'new', from: name });
    }
    expect((await runCli(['new', 'starter-js'], env, { cwd: parent })).code).toBe(2); // exists already
  }, 180_000);

  it('login saves credentials 0600 and the CLI uses them; a wrong password is refused with what to do', async () => {
    const cfg = path.join(tmp, 'login-config');
    const password = fs.readFileSync(path.join(p.dir, 'data', 'admin-password'), 'utf8').trim();
    const noLocal = { MAYFLY_GATEWAY: p.gatewayUrl, XDG_CONFIG_HOME: cfg, MAYFLY_DATA_DIR: path.join(tmp, 'nowhere') };
    const denied = await runCli(['list'], noLocal);
    expect(denied.code).toBe(3);
    expect(denied.stderr).toMatch(/run `mayfly login --gateway/);
    const wrong = await runCli(['login', '--password-stdin'], noLocal, { input: 'not-the-password\n' });
    expect(wrong.code).toBe(3);
    const ok = await runCli(['login', '--password-stdin'], noLocal, { input: `${password}\n` });
    expect(ok.code).toBe(0);
    const file = path.join(cfg, 'mayfly', 'credentials.json');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(ok.stdout).not.toContain(password);
    const list = await runCli(['list', '--json'], noLocal);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ name: string }>).map((f) => f.name)).toContain('dep');
    // Tokens through the CLI: create, use, revoke.
    const t = await runCli(['token', 'create', 'ci'], noLocal);
    expect(t.code).toBe(0);
    const tokenList = JSON.parse((await runCli(['token', 'list', '--json'], noLocal)).stdout) as Array<{ id: string; name: string }>;
    const id = tokenList.find((x) => x.name === 'ci')!.id;
    const withToken = await runCli(['describe', 'dep', '--token', t.stdout.trim()], { ...noLocal, XDG_CONFIG_HOME: path.join(tmp, 'empty') });
    expect(withToken.code).toBe(0);
    expect(withToken.stdout).toMatch(/^name:\s+dep$/m);
    expect((await runCli(['token', 'revoke', id], noLocal)).code).toBe(0);
    // Secrets through the CLI (value from stdin; names only come back).
    expect((await runCli(['secret', 'create', 'db-pass'], noLocal, { input: 's3cret' })).stdout).toBe('secret db-pass created\n');
    const secrets = await runCli(['secret', 'list'], noLocal);
    expect(secrets.stdout).toMatch(/^db-pass\s/m);
    expect(secrets.stdout).not.toContain('s3cret');
    expect((await runCli(['secret', 'remove', 'db-pass'], noLocal)).code).toBe(0);
    // Call records and removal.
    const calls = JSON.parse((await runCli(['calls', 'dep', '--json'], noLocal)).stdout) as Array<{ function: string; status: string }>;
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.every((c) => c.function === 'dep')).toBe(true);
    expect((await runCli(['remove', 's-plain'], noLocal)).stdout).toBe('removed s-plain\n');
    expect((await runCli(['describe', 's-plain'], noLocal)).code).toBe(3);
  }, 180_000);
});
