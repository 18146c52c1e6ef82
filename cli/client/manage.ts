/** The small commands: list, describe, remove, calls, secret, token, new. */
import fs from 'node:fs';
import path from 'node:path';
import { EXIT, usageError } from './errors.js';
import { printJson, table } from './output.js';
import { createStarter } from './starter.js';
import { client, parse, readStdin, requireName } from './args.js';

// ---- list / describe / remove --------------------------------------------------------------

export interface Status {
  name: string;
  version: number;
  runtime: string;
  handler: string;
  isolation: string;
  memory: string;
  timeout: number;
  invocationCount: number;
  updatedAt: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  codeHash?: string;
}

export async function list(argv: string[]): Promise<number> {
  const { values } = parse(argv, {}, 0);
  const fns = await client(values).system<Status[]>('GET', '/system/functions');
  if (values.json) printJson(fns);
  else process.stdout.write(table(fns.map((f) => ({ ...f, timeout: `${f.timeout / 1000}s` })), ['name', 'version', 'runtime', 'isolation', 'memory', 'timeout', 'invocationCount', 'updatedAt']));
  return EXIT.ok;
}

export async function describeFn(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {});
  const name = requireName(positionals, 'mayfly describe NAME');
  const f = await client(values).system<Status>('GET', `/system/function/${encodeURIComponent(name)}`);
  if (values.json) printJson(f);
  else {
    const rows: Array<[string, unknown]> = [
      ['name', f.name], ['version', f.version], ['runtime', f.runtime], ['handler', f.handler], ['isolation', f.isolation],
      ['memory', f.memory], ['timeout', `${f.timeout / 1000}s`], ['invocations', f.invocationCount], ['updated', f.updatedAt],
      ['labels', JSON.stringify(f.labels)], ['annotations', JSON.stringify(f.annotations)],
    ];
    process.stdout.write(rows.map(([k, v]) => `${`${k}:`.padEnd(13)}${String(v)}`).join('\n') + '\n');
  }
  return EXIT.ok;
}

export async function remove(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {});
  const name = requireName(positionals, 'mayfly remove NAME');
  await client(values).system('DELETE', '/system/functions', { functionName: name });
  if (values.json) printJson({ removed: name });
  else process.stdout.write(`removed ${name}\n`);
  return EXIT.ok;
}

// ---- calls -------------------------------------------------------------------------------

export async function calls(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { status: { type: 'string' }, limit: { type: 'string' } });
  const q = new URLSearchParams({ ...(positionals[0] ? { function: positionals[0] } : {}), ...(values.status ? { status: values.status } : {}), limit: values.limit ?? '20' });
  const records = await client(values).system<Array<Record<string, unknown>>>('GET', `/system/invocations?${q}`);
  if (values.json) printJson(records);
  else process.stdout.write(table(records, ['callId', 'function', 'mode', 'status', 'statusCode', 'start', 'queuedAt', 'error']));
  return EXIT.ok;
}

// ---- secrets and tokens ------------------------------------------------------------------------

export async function secret(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parse(rest, { 'from-literal': { type: 'string' }, 'from-file': { type: 'string' } });
  const c = client(values);
  switch (sub) {
    case 'create':
    case 'update': {
      const name = requireName(positionals, `mayfly secret ${sub} NAME [--from-literal V | --from-file F | stdin]`);
      const value =
        values['from-literal'] ?? (values['from-file'] ? fs.readFileSync(values['from-file'], 'utf8') : process.stdin.isTTY ? undefined : (await readStdin()).toString('utf8'));
      if (value === undefined) throw usageError('no value: pass --from-literal, --from-file or pipe it on stdin');
      await c.system(sub === 'create' ? 'POST' : 'PUT', '/system/secrets', { name, value });
      if (values.json) printJson({ name });
      else process.stdout.write(`secret ${name} ${sub === 'create' ? 'created' : 'updated'}\n`);
      return EXIT.ok;
    }
    case 'list':
    case 'ls': {
      const list = await c.system<Array<Record<string, unknown>>>('GET', '/system/secrets');
      if (values.json) printJson(list);
      else process.stdout.write(table(list, ['name', 'createdAt', 'updatedAt']));
      return EXIT.ok;
    }
    case 'remove':
    case 'rm': {
      const name = requireName(positionals, 'mayfly secret remove NAME');
      await c.system('DELETE', '/system/secrets', { name });
      if (values.json) printJson({ removed: name });
      else process.stdout.write(`secret ${name} removed\n`);
      return EXIT.ok;
    }
    default:
      throw usageError('mayfly secret create|update|list|remove ...');
  }
}

export async function token(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parse(rest, {});
  const c = client(values);
  switch (sub) {
    case 'create': {
      const name = requireName(positionals, 'mayfly token create NAME');
      const t = await c.system<Record<string, unknown>>('POST', '/system/tokens', { name });
      if (values.json) printJson(t);
      else process.stdout.write(`${String(t.token)}\n`), process.stderr.write(`token ${String(t.id)} (${name}) created; it is shown only now\n`);
      return EXIT.ok;
    }
    case 'list':
    case 'ls': {
      const list = await c.system<Array<Record<string, unknown>>>('GET', '/system/tokens');
      if (values.json) printJson(list);
      else process.stdout.write(table(list, ['id', 'name', 'createdAt', 'lastUsedAt']));
      return EXIT.ok;
    }
    case 'revoke': {
      const id = requireName(positionals, 'mayfly token revoke ID');
      await c.system('DELETE', `/system/tokens/${encodeURIComponent(id)}`);
      if (values.json) printJson({ revoked: id });
      else process.stdout.write(`token ${id} revoked\n`);
      return EXIT.ok;
    }
    default:
      throw usageError('mayfly token create|list|revoke ...');
  }
}

// ---- new ---------------------------------------------------------------------------------

export async function newFunction(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { lang: { type: 'string' }, dir: { type: 'string' } });
  const name = requireName(positionals, 'mayfly new NAME --lang js|ts');
  if (!/^[a-z0-9-]{1,63}$/.test(name)) throw usageError(`"${name}" is not a function name: 1 to 63 characters of a-z, 0-9 and "-"`);
  const lang = values.lang ?? 'js';
  if (lang !== 'js' && lang !== 'ts') throw usageError(`--lang must be js or ts, got "${lang}"`);
  const parent = values.dir ?? process.cwd();
  const files = createStarter(name, lang, parent);
  const rel = path.relative(process.cwd(), path.join(parent, name)) || '.';
  if (values.json) printJson({ files: files.map((f) => path.join(parent, f)) });
  else process.stdout.write(`${files.join('\n')}\nnext: (cd ${rel} && ${lang === 'ts' ? 'npm install && ' : ''}npm test) && npx mayfly deploy -f ${rel}/mayfly.yml\n`);
  return EXIT.ok;
}

