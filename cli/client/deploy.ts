/** `mayfly deploy`: a file, a folder or a stack file; creates or updates each function and says what changed. */
import fs from 'node:fs';
import path from 'node:path';
import { CliError, EXIT, usageError } from './errors.js';
import type { GatewayClient } from './http.js';
import { printJson, seconds } from './output.js';
import { loadStack, type StackFunction } from './stack.js';
import { readSource } from './source.js';
import { client, pairs, parse } from './args.js';
import type { Status } from './manage.js';

// ---- deploy ------------------------------------------------------------------------------

interface DeploySpec {
  service: string;
  code?: string;
  package?: string;
  handler?: string;
  image?: string;
  envProcess?: string;
  envVars?: Record<string, string>;
  secrets?: string[];
  limits?: { memory: string };
  timeout?: string;
  isolation?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function settings(fn: StackFunction): Partial<DeploySpec> {
  return {
    ...(fn.environment ? { envVars: fn.environment } : {}),
    ...(fn.secrets ? { secrets: fn.secrets } : {}),
    ...(fn.limits?.memory ? { limits: { memory: fn.limits.memory } } : {}),
    ...(fn.timeout ? { timeout: fn.timeout } : {}),
    ...(fn.isolation ? { isolation: fn.isolation } : {}),
    ...(fn.labels ? { labels: fn.labels } : {}),
    ...(fn.annotations ? { annotations: fn.annotations } : {}),
  };
}

async function specFor(name: string, fn: StackFunction, baseDir: string): Promise<{ spec: DeploySpec; description: string }> {
  if (fn.image !== undefined) {
    // An OpenFaaS image: the gateway pulls it (README "OpenFaaS images").
    const spec: DeploySpec = { service: name, image: fn.image, ...(fn.fprocess ? { envProcess: fn.fprocess } : {}), ...settings(fn) };
    return { spec, description: `image ${fn.image}` };
  }
  const file = path.resolve(baseDir, fn.handler!);
  const src = await readSource(file);
  let handler = fn.entrypoint ?? src.handler;
  if (src.package && !fs.statSync(file).isDirectory() && !handler.includes('.')) handler = `${path.basename(file, path.extname(file))}.${handler}`;
  const spec: DeploySpec = {
    service: name,
    handler,
    ...(src.code !== undefined ? { code: src.code } : { package: src.package! }),
    ...settings(fn),
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
  const image = d.build?.image as { reference?: string; pullMs?: number; unpackedBytes?: number } | undefined;
  const build = image
    ? `, image ${image.reference} pulled in ${seconds(image.pullMs)}, ${image.unpackedBytes} bytes unpacked`
    : d.build
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
    image: { type: 'string' },
    fprocess: { type: 'string' },
  });
  const results: Deployed[] = [];
  if (values.image !== undefined && positionals.length === 0 && !values.file) {
    // mayfly deploy --image REF --name NAME [--fprocess CMD]: an OpenFaaS image.
    if (!values.name) throw usageError('--image needs --name: the function to deploy it as');
    positionals.push('');
  }
  if (values.fprocess !== undefined && values.image === undefined) throw usageError('--fprocess is for --image functions only');
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
    if (values.image !== undefined && p !== '') throw usageError('give either a file or folder, or --image, not both');
    const name = values.name ?? path.basename(p, path.extname(p)).toLowerCase().replace(/[^a-z0-9-]+/g, '-');
    const fn: StackFunction = {
      ...(values.image !== undefined ? { image: values.image, ...(values.fprocess ? { fprocess: values.fprocess } : {}) } : { handler: path.resolve(p) }),
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

