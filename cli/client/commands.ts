/**
 * The client commands of `mayfly` (login, deploy, invoke, list, describe, logs,
 * remove, secret, token, calls, new). Each parses its own options
 * (node:util parseArgs), talks to the gateway through GatewayClient and prints
 * a table for people or `--json` for scripts. Exit codes: ./errors.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CliError, EXIT, usageError } from './errors.js';
import { localAdminPassword, resolveCredentials, resolveGateway, saveCredentials, normalizeGateway } from './credentials.js';
import { GatewayClient } from './http.js';
import { printJson, seconds, table } from './output.js';
import { loadStack, type StackFunction } from './stack.js';
import { readSource } from './source.js';
import { createStarter } from './starter.js';
import { PLATFORM_STATUS } from '../../lib/response-mapping.js';

/** Platform failures (exit 4); FUNCTION_TIMEOUT and INIT_FAILED are the function's own (exit 1). */
const PLATFORM_CODES = new Set(Object.keys(PLATFORM_STATUS).filter((c) => c !== 'FUNCTION_TIMEOUT' && c !== 'INIT_FAILED'));

const COMMON = {
  gateway: { type: 'string', short: 'g' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const;

type Options = NonNullable<ParseArgsConfig['options']>;

function parse<O extends Options>(argv: string[], options: O, positionals = 1) {
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
    if (r.positionals.length > positionals) throw new Error(`unexpected argument "${r.positionals[positionals]}"`);
    return r;
  } catch (err) {
    throw usageError((err as Error).message.replace(/^TypeError \[\w+\]: /, ''));
  }
}

function client(values: { gateway?: string | boolean | undefined; token?: string | boolean | undefined }, stackGateway?: string): GatewayClient {
  const gateway = resolveGateway(values.gateway as string | undefined, stackGateway);
  return new GatewayClient(gateway, resolveCredentials(gateway, values.token as string | undefined));
}

/** k=v or k:v pairs into a record. */
function pairs(list: string[] | undefined, sep: string, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list ?? []) {
    const i = item.indexOf(sep);
    if (i <= 0) throw usageError(`${what} "${item}" must look like key${sep}value`);
    out[item.slice(0, i).trim()] = item.slice(i + 1).trim();
  }
  return out;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function requireName(positionals: string[], usage: string): string {
  const name = positionals[0];
  if (!name) throw usageError(`missing the function name: ${usage}`);
  return name;
}

// ---- login -------------------------------------------------------------------------------

export async function login(argv: string[]): Promise<number> {
  const { values } = parse(argv, { username: { type: 'string', short: 'u' }, password: { type: 'string', short: 'p' }, 'password-stdin': { type: 'boolean' } }, 0);
  const gateway = resolveGateway(values.gateway, undefined);
  const user = values.username ?? 'admin';
  let password = values.password;
  let source = '--password';
  let creds: { user: string; password: string } | { token: string };
  if (values['password-stdin']) {
    password = (await readStdin()).toString('utf8').trim();
    source = 'stdin';
  }
  if (values.token) {
    creds = { token: values.token };
    source = '--token';
  } else {
    if (password === undefined) {
      const local = localAdminPassword();
      if (!local) {
        throw usageError(`no password: pass --password-stdin (echo "$PASSWORD" | mayfly login --password-stdin) or run on the machine of \`npm start\` (it keeps the password in its data dir)`);
      }
      password = local.password;
      source = local.source;
    }
    creds = { user, password };
  }
  const c = new GatewayClient(gateway, 'token' in creds ? { kind: 'token', token: creds.token, source } : { kind: 'basic', user, password: creds.password, source });
  await c.system('GET', '/system/functions'); // checks the credentials (401 → exit 3 with what to do)
  const file = saveCredentials(gateway, creds);
  if (values.json) printJson({ gateway, file, from: source });
  else process.stdout.write(`logged in to ${gateway} (credentials from ${source}, saved in ${file}, mode 0600)\n`);
  return EXIT.ok;
}

// ---- deploy ------------------------------------------------------------------------------

interface DeploySpec {
  service: string;
  code?: string;
  package?: string;
  handler: string;
  envVars?: Record<string, string>;
  secrets?: string[];
  limits?: { memory: string };
  timeout?: string;
  isolation?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

async function specFor(name: string, fn: StackFunction, baseDir: string): Promise<{ spec: DeploySpec; description: string }> {
  const file = path.resolve(baseDir, fn.handler);
  const src = await readSource(file);
  let handler = fn.entrypoint ?? src.handler;
  if (src.package && !fs.statSync(file).isDirectory() && !handler.includes('.')) handler = `${path.basename(file, path.extname(file))}.${handler}`;
  const spec: DeploySpec = {
    service: name,
    handler,
    ...(src.code !== undefined ? { code: src.code } : { package: src.package! }),
    ...(fn.environment ? { envVars: fn.environment } : {}),
    ...(fn.secrets ? { secrets: fn.secrets } : {}),
    ...(fn.limits?.memory ? { limits: { memory: fn.limits.memory } } : {}),
    ...(fn.timeout ? { timeout: fn.timeout } : {}),
    ...(fn.isolation ? { isolation: fn.isolation } : {}),
    ...(fn.labels ? { labels: fn.labels } : {}),
    ...(fn.annotations ? { annotations: fn.annotations } : {}),
  };
  return { spec, description: src.description };
}

interface Deployed {
  name: string;
  action: 'created' | 'updated';
  version: number;
  /** For an update: what differs from the previous version (environment and secrets are not shown by the API). */
  changed?: string[];
  build?: Record<string, unknown>;
  seconds: number;
}

const COMPARED: Array<[keyof Status, string]> = [
  ['codeHash', 'code'],
  ['handler', 'handler'],
  ['memory', 'memory'],
  ['timeout', 'timeout'],
  ['isolation', 'isolation'],
  ['labels', 'labels'],
  ['annotations', 'annotations'],
];

/** Create, or update when it exists, and say what changed. */
async function deployOne(c: GatewayClient, spec: DeploySpec): Promise<Deployed> {
  const started = Date.now();
  const body = JSON.stringify(spec);
  const headers = { 'content-type': 'application/json' };
  const prev = await c.raw('GET', `/system/function/${encodeURIComponent(spec.service)}`);
  const before = prev.status === 200 ? (JSON.parse(prev.text) as Status) : null;
  let r = await c.raw(before ? 'PUT' : 'POST', '/system/functions', { body, headers });
  let action: Deployed['action'] = before ? 'updated' : 'created';
  if (r.status === 409 && !before) {
    r = await c.raw('PUT', '/system/functions', { body, headers });
    action = 'updated';
  }
  if (r.status >= 400) {
    const e = c.error(r);
    throw new CliError(`${spec.service}: ${e.message}`, e.exitCode);
  }
  const status = JSON.parse(r.text) as Status & { build?: Record<string, unknown> };
  const changed = before ? COMPARED.filter(([k]) => JSON.stringify(before[k]) !== JSON.stringify(status[k])).map(([, label]) => label) : undefined;
  return {
    name: spec.service,
    action,
    version: status.version,
    ...(changed ? { changed } : {}),
    ...(status.build ? { build: status.build } : {}),
    seconds: (Date.now() - started) / 1000,
  };
}

function describeDeployed(d: Deployed): string {
  const build = d.build
    ? `, built in ${seconds(d.build.totalMs)}${d.build.installed ? ` (npm ci ${seconds(d.build.installMs)})` : ''}, bundle ${d.build.bundleBytes} bytes`
    : '';
  const changed = d.changed ? (d.changed.length ? `; changed: ${d.changed.join(', ')}` : '; same code and settings') : '';
  return `${d.action} ${d.name} (version ${d.version}${build}${changed}) in ${d.seconds.toFixed(1)} s\n`;
}

export async function deploy(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    file: { type: 'string', short: 'f' },
    filter: { type: 'string', multiple: true },
    name: { type: 'string' },
    handler: { type: 'string' },
    env: { type: 'string', short: 'e', multiple: true },
    secret: { type: 'string', multiple: true },
    memory: { type: 'string' },
    timeout: { type: 'string' },
    isolation: { type: 'string' },
    label: { type: 'string', short: 'l', multiple: true },
    annotation: { type: 'string', multiple: true },
  });
  const results: Deployed[] = [];
  if (values.file || positionals.length === 0) {
    const file = values.file ?? (fs.existsSync('mayfly.yml') ? 'mayfly.yml' : fs.existsSync('stack.yml') ? 'stack.yml' : undefined);
    if (!file) throw usageError('nothing to deploy: give a file or folder (mayfly deploy hello.mjs --name hello), or a stack file (-f mayfly.yml)');
    const { stack, dir } = loadStack(file);
    const names = Object.keys(stack.functions).filter((n) => !values.filter || values.filter.includes(n));
    if (names.length === 0) throw usageError(`--filter ${values.filter?.join(',')} matches no function of ${file} (it has: ${Object.keys(stack.functions).join(', ')})`);
    const c = client(values, stack.provider?.gateway);
    for (const name of names) {
      const { spec } = await specFor(name, stack.functions[name]!, dir);
      const d = await deployOne(c, spec);
      results.push(d);
      if (!values.json) process.stdout.write(describeDeployed(d));
    }
  } else {
    const p = positionals[0]!;
    const name = values.name ?? path.basename(p, path.extname(p)).toLowerCase().replace(/[^a-z0-9-]+/g, '-');
    const fn: StackFunction = {
      handler: path.resolve(p),
      ...(values.handler ? { entrypoint: values.handler } : {}),
      ...(values.env ? { environment: pairs(values.env, '=', '--env') } : {}),
      ...(values.secret ? { secrets: values.secret } : {}),
      ...(values.memory ? { limits: { memory: values.memory } } : {}),
      ...(values.timeout ? { timeout: values.timeout } : {}),
      ...(values.isolation ? { isolation: values.isolation as StackFunction['isolation'] } : {}),
      ...(values.label ? { labels: pairs(values.label, '=', '--label') } : {}),
      ...(values.annotation ? { annotations: pairs(values.annotation, '=', '--annotation') } : {}),
    };
    const { spec } = await specFor(name, fn, process.cwd());
    const d = await deployOne(client(values), spec);
    results.push(d);
    if (!values.json) process.stdout.write(describeDeployed(d));
  }
  if (values.json) printJson(results);
  return EXIT.ok;
}

// ---- invoke ------------------------------------------------------------------------------

export async function invoke(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    async: { type: 'boolean' },
    header: { type: 'string', short: 'H', multiple: true },
    query: { type: 'string', short: 'q', multiple: true },
    data: { type: 'string', short: 'd' },
    method: { type: 'string', short: 'X' },
    path: { type: 'string' },
    'callback-url': { type: 'string' },
    verbose: { type: 'boolean', short: 'v' },
  });
  const name = requireName(positionals, 'mayfly invoke NAME [--data BODY]');
  const c = client(values);
  const body = values.data !== undefined ? Buffer.from(values.data) : process.stdin.isTTY ? undefined : await readStdin();
  const qs = new URLSearchParams(pairs(values.query, '=', '--query')).toString();
  const sub = values.path ? `/${values.path.replace(/^\/+/, '')}` : '';
  const headers = pairs(values.header, ':', '--header');
  if (values['callback-url']) headers['x-callback-url'] = values['callback-url'];
  const method = values.async ? 'POST' : (values.method ?? (body && body.length > 0 ? 'POST' : 'GET')).toUpperCase();
  const url = `/${values.async ? 'async-function' : 'function'}/${encodeURIComponent(name)}${sub}${qs ? `?${qs}` : ''}`;
  const r = await c.raw(method, url, { ...(body && method !== 'GET' && method !== 'HEAD' ? { body } : {}), headers });
  const callId = r.headers.get('x-call-id') ?? undefined;
  if (values.json) {
    printJson({ status: r.status, callId, start: r.headers.get('x-mayfly-start') ?? undefined, durationSeconds: Number(r.headers.get('x-duration-seconds') ?? NaN) || undefined, body: r.text });
  } else if (values.async && r.status === 202) {
    process.stdout.write(`${callId}\n`);
    process.stderr.write(`queued; result: mayfly calls ${name} or GET /system/invocations/${callId}\n`);
  } else {
    process.stdout.write(r.text.endsWith('\n') || r.text === '' ? r.text : `${r.text}\n`);
    if (values.verbose || r.status >= 400) {
      process.stderr.write(`HTTP ${r.status}, call ${callId ?? '-'}, start ${r.headers.get('x-mayfly-start') ?? '-'}, ${r.headers.get('x-duration-seconds') ?? '?'} s\n`);
    }
  }
  return invokeExitCode(r.status, callId, r.text);
}

/**
 * 0 below 400; 3 when the gateway refused before any call (no call id: unknown
 * function, bad request, not authorised); 4 for a platform failure (a 5xx whose
 * code is the platform's: no capacity, VM fault); 1 when the function answered
 * with an error (it threw, failed to load, timed out, or returned a 4xx/5xx itself).
 */
export function invokeExitCode(status: number, callId: string | undefined, body: string): number {
  if (status < 400) return EXIT.ok;
  if (!callId) return status >= 500 ? EXIT.unavailable : EXIT.refused;
  let code: unknown;
  try {
    code = (JSON.parse(body) as { code?: unknown }).code;
  } catch {
    // the function's own body
  }
  if (status >= 500 && typeof code === 'string' && code !== 'FUNCTION_ERROR' && /^[A-Z_]+$/.test(code) && PLATFORM_CODES.has(code)) return EXIT.unavailable;
  return EXIT.functionError;
}

// ---- list / describe / remove --------------------------------------------------------------

interface Status {
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

// ---- logs --------------------------------------------------------------------------------

interface LogLine {
  name: string;
  instance?: string;
  timestamp: string;
  text: string;
  callId?: string;
  stream?: string;
}

export async function logs(argv: string[], opts: { pollMs?: number } = {}): Promise<number> {
  const { values, positionals } = parse(argv, { follow: { type: 'boolean' }, since: { type: 'string' }, tail: { type: 'string' } });
  const name = requireName(positionals, 'mayfly logs NAME [--follow] [--since 10m]');
  const c = client(values);
  const seen = new Set<string>();
  const show = (l: LogLine) => {
    if (values.json) process.stdout.write(JSON.stringify(l) + '\n');
    else process.stdout.write(`${l.timestamp} ${l.callId ? `${l.callId.slice(0, 8)} ` : ''}${l.text}\n`);
  };
  const fetchLines = async (since: string | undefined, tail: string | undefined): Promise<LogLine[]> => {
    const q = new URLSearchParams({ name, ...(since ? { since } : {}), ...(tail ? { tail } : {}) });
    const r = await c.raw('GET', `/system/logs?${q}`);
    if (r.status >= 400) throw c.error(r);
    return r.text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
  };
  const key = (l: LogLine) => `${l.callId}|${l.timestamp}|${l.stream}|${l.text}`;
  let last: string | undefined;
  for (const l of await fetchLines(values.since, values.tail)) {
    seen.add(key(l));
    show(l);
    last = l.timestamp;
  }
  if (!values.follow) return EXIT.ok;
  const startedAt = new Date().toISOString();
  let stop = false;
  process.once('SIGINT', () => (stop = true));
  process.once('SIGTERM', () => (stop = true));
  while (!stop) {
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    // Lines are stamped with their call's end; ask from the last one seen (or the start), dedupe.
    for (const l of await fetchLines(last ?? startedAt, undefined)) {
      const k = key(l);
      if (seen.has(k)) continue;
      seen.add(k);
      show(l);
      if (!last || l.timestamp > last) last = l.timestamp;
    }
    if (seen.size > 100_000) seen.clear();
  }
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

export { normalizeGateway };
