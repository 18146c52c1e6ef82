/** The CLI client's pure parts: the stack file, where the gateway and credentials come from, saved credentials. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveCredentials, resolveGateway, saveCredentials, credentialsFile } from '../../cli/client/credentials.js';
import { loadStack } from '../../cli/client/stack.js';
import { table } from '../../cli/client/output.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mfcli-unit-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function stackFile(text: string): string {
  const f = path.join(tmp, `s${Math.random().toString(16).slice(2)}.yml`);
  fs.writeFileSync(f, text);
  return f;
}

const GOOD = `version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  api:
    lang: typescript
    handler: ./api
    entrypoint: src/index.handler
    environment:
      RETRIES: 3
      DEBUG: true
    limits:
      memory: 256Mi
    timeout: 30s
`;

describe('stack file', () => {
  it('parses the faas-cli shape; scalars in maps become strings', () => {
    const { stack, dir } = loadStack(stackFile(GOOD));
    expect(dir).toBe(tmp);
    expect(stack.provider?.gateway).toBe('http://127.0.0.1:8080');
    expect(stack.functions.api).toMatchObject({ lang: 'typescript', handler: './api', environment: { RETRIES: '3', DEBUG: 'true' }, limits: { memory: '256Mi' } });
  });

  it.each([
    ['an unknown function key with a hint', GOOD.replace('    lang: typescript\n', '    build_args: {}\n'), /functions\.api\.build_args: unknown key \(Mayfly builds packages itself/],
    ['both a handler and an image', GOOD.replace('    lang: typescript\n', '    image: x/y:1\n'), /functions\.api: needs either "handler" \(code\) or "image"/],
    ['an fprocess without an image', GOOD.replace('    lang: typescript\n', '    fprocess: cat\n'), /functions\.api\.fprocess: only an image function has an fprocess/],
    ['an unknown nested key', GOOD.replace('      memory: 256Mi\n', '      memory: 256Mi\n      cpu: 100m\n'), /functions\.api\.limits\.cpu: unknown key/],
    ['an unknown top-level key', `${GOOD}configuration:\n  templates: []\n`, /: configuration: unknown key/],
    ['a bad function name', GOOD.replace('  api:', '  Api_1:'), /functions\.Api_1: function names are/],
    ['a bad isolation', `${GOOD}    isolation: shared\n`, /functions\.api\.isolation: /],
    ['another provider', GOOD.replace('name: openfaas', 'name: lambda'), /provider\.name: must be "mayfly"/],
    ['no functions', 'version: 1.0\nfunctions: {}\n', /functions: lists no function/],
    ['bad YAML, with line and column', 'functions:\n  a:\n    handler: [x\n', /\.yml:\d+:\d+: not valid YAML/],
    ['a duplicate key', 'functions:\n  a:\n    handler: x\n    handler: y\n', /not valid YAML: Map keys must be unique/],
  ])('refuses %s, naming it', (_what, text, message) => {
    expect(() => loadStack(stackFile(text))).toThrow(message);
  });

  it('takes an OpenFaaS image function: image and fprocess, no handler', () => {
    const { stack } = loadStack(stackFile('provider:\n  name: openfaas\nfunctions:\n  stronghash:\n    lang: dockerfile\n    image: functions/alpine:latest\n    fprocess: sha512sum\n'));
    expect(stack.functions.stronghash).toEqual({ lang: 'dockerfile', image: 'functions/alpine:latest', fprocess: 'sha512sum' });
  });

  it('names a missing file', () => {
    expect(() => loadStack(path.join(tmp, 'nope.yml'))).toThrow(/cannot read the stack file .*nope\.yml: ENOENT/);
  });
});

describe('gateway and credentials', () => {
  it('takes the gateway from the flag, then MAYFLY_GATEWAY, then the stack file, then MAYFLY_PORT', () => {
    expect(resolveGateway('10.0.0.1:9000/', 'http://s:1', { MAYFLY_GATEWAY: 'http://e:2' })).toBe('http://10.0.0.1:9000');
    expect(resolveGateway(undefined, 'http://s:1', { MAYFLY_GATEWAY: 'http://e:2' })).toBe('http://e:2');
    expect(resolveGateway(undefined, 'http://s:1', {})).toBe('http://s:1');
    expect(resolveGateway(undefined, undefined, { MAYFLY_PORT: '9999' })).toBe('http://127.0.0.1:9999');
  });

  it('saves credentials with mode 0600 and prefers token > password env > saved > the local data dir', () => {
    const dataDir = path.join(tmp, 'data');
    fs.mkdirSync(dataDir, { recursive: true });
    fs.writeFileSync(path.join(dataDir, 'admin-password'), 'local-secret\n', { mode: 0o600 });
    const env = { XDG_CONFIG_HOME: path.join(tmp, 'cfg'), MAYFLY_DATA_DIR: dataDir };
    const gw = 'http://127.0.0.1:8080';
    expect(resolveCredentials(gw, undefined, env)).toMatchObject({ kind: 'basic', user: 'admin', password: 'local-secret' });
    expect(resolveCredentials('http://remote.example:8080', undefined, env)).toBeNull(); // the local password never goes elsewhere
    const file = saveCredentials(gw, { user: 'admin', password: 'saved' }, env);
    expect(file).toBe(credentialsFile(env));
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(resolveCredentials(gw, undefined, env)).toMatchObject({ password: 'saved' });
    expect(resolveCredentials(gw, undefined, { ...env, MAYFLY_PASSWORD: 'p', MAYFLY_USER: 'ops' })).toMatchObject({ user: 'ops', password: 'p' });
    expect(resolveCredentials(gw, undefined, { ...env, MAYFLY_TOKEN: 'mf_env' })).toMatchObject({ kind: 'token', token: 'mf_env' });
    expect(resolveCredentials(gw, 'mf_flag', { ...env, MAYFLY_TOKEN: 'mf_env' })).toMatchObject({ kind: 'token', token: 'mf_flag' });
  });

  it('prints aligned tables', () => {
    expect(table([{ name: 'a', version: 1 }, { name: 'long-name', version: 12 }], ['name', 'version'])).toBe('NAME       VERSION\na          1\nlong-name  12\n');
  });
});

describe('invoke exit codes', () => {
  it('tells the function\'s errors (1) from refusals (3) and platform failures (4)', async () => {
    const { invokeExitCode } = await import('../../cli/client/commands.js');
    expect(invokeExitCode(200, 'c1', '{}')).toBe(0);
    expect(invokeExitCode(404, undefined, '{"code":"FUNCTION_NOT_FOUND"}')).toBe(3);
    expect(invokeExitCode(401, undefined, '{"code":"UNAUTHORIZED"}')).toBe(3);
    expect(invokeExitCode(500, 'c1', '{"error":"boom","code":"FUNCTION_ERROR"}')).toBe(1);
    expect(invokeExitCode(404, 'c1', 'not here')).toBe(1); // the function's own 404
    expect(invokeExitCode(504, 'c1', '{"code":"FUNCTION_TIMEOUT"}')).toBe(1);
    expect(invokeExitCode(503, 'c1', '{"code":"NO_CAPACITY"}')).toBe(4);
    expect(invokeExitCode(502, 'c1', '{"code":"VM_FAILED"}')).toBe(4);
    expect(invokeExitCode(502, undefined, 'bad gateway')).toBe(4);
  });
});
