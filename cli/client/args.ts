/** What the client commands share: option parsing, the gateway client, small input helpers. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { usageError } from './errors.js';
import { resolveCredentials, resolveGateway } from './credentials.js';
import { GatewayClient } from './http.js';

export const COMMON = {
  gateway: { type: 'string', short: 'g' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const;

type Options = NonNullable<ParseArgsConfig['options']>;

export function parse<O extends Options>(argv: string[], options: O, positionals = 1) {
  try {
    const r = parseArgs({ args: argv, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
    if (r.positionals.length > positionals) throw new Error(`unexpected argument "${r.positionals[positionals]}"`);
    return r;
  } catch (err) {
    throw usageError((err as Error).message.replace(/^TypeError \[\w+\]: /, ''));
  }
}

export function client(values: { gateway?: string | boolean | undefined; token?: string | boolean | undefined }, stackGateway?: string): GatewayClient {
  const gateway = resolveGateway(values.gateway as string | undefined, stackGateway);
  return new GatewayClient(gateway, resolveCredentials(gateway, values.token as string | undefined));
}

/** k=v or k:v pairs into a record. */
export function pairs(list: string[] | undefined, sep: string, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list ?? []) {
    const i = item.indexOf(sep);
    if (i <= 0) throw usageError(`${what} "${item}" must look like key${sep}value`);
    out[item.slice(0, i).trim()] = item.slice(i + 1).trim();
  }
  return out;
}

export async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function requireName(positionals: string[], usage: string): string {
  const name = positionals[0];
  if (!name) throw usageError(`missing the function name: ${usage}`);
  return name;
}

