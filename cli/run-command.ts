/**
 * `mayfly run FILE`: the local run users know from `sam local invoke` and
 * `faas-cli local-run`. Boots a fresh VM, runs the handler once, destroys the VM.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { loadConfig } from '../contracts/config.js';
import { InvocationError } from '../worker/guest-session.js';
import { VmHost } from '../worker/vm-host.js';
import { printProgress } from './progress.js';

function pairs(list: string[] | undefined, sep: string, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list ?? []) {
    const i = item.indexOf(sep);
    if (i <= 0) throw new Error(`--${what} expects NAME${sep}VALUE, got "${item}"`);
    out[item.slice(0, i).trim()] = item.slice(i + 1).trim();
  }
  return out;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function runCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      event: { type: 'string' },
      handler: { type: 'string', default: 'handler' },
      method: { type: 'string', default: 'POST' },
      path: { type: 'string', default: '/' },
      query: { type: 'string', multiple: true },
      header: { type: 'string', multiple: true },
      env: { type: 'string', multiple: true },
      timeout: { type: 'string' },
      memory: { type: 'string' },
    },
  });
  const file = positionals[0];
  if (!file || positionals.length > 1) throw new Error('usage: mayfly run FILE [--event BODY] (see mayfly --help)');
  const config = loadConfig();
  const code = fs.readFileSync(file, 'utf8');
  const body = values.event ?? (process.stdin.isTTY ? '' : await readStdin());
  const timeoutMs = values.timeout ? Number(values.timeout) : config.MAYFLY_DEFAULT_TIMEOUT_MS;
  const memory = values.memory ? Number(values.memory) : config.MAYFLY_DEFAULT_MEMORY_MB;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > config.MAYFLY_MAX_TIMEOUT_MS) {
    throw new Error(`--timeout must be an integer between 1 and ${config.MAYFLY_MAX_TIMEOUT_MS} ms`);
  }
  if (!Number.isInteger(memory) || memory < 64 || memory > config.MAYFLY_MAX_MEMORY_MB) {
    throw new Error(`--memory must be an integer between 64 and ${config.MAYFLY_MAX_MEMORY_MB} MB`);
  }
  const headers = Object.fromEntries(
    Object.entries(pairs(values.header, ':', 'header')).map(([k, v]) => [k.toLowerCase(), v]),
  );

  const host = await VmHost.open(config, printProgress);
  const stop = () => void host.close().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const callId = randomUUID();
  try {
    const { outcome, timings } = await host.runOnce(
      {
        functionName: path.basename(file).replace(/\.[^.]*$/, '').toLowerCase() || 'function',
        code,
        handler: values.handler,
        env: pairs(values.env, '=', 'env'),
        memoryLimitInMB: memory,
      },
      {
        callId,
        timeoutMs,
        event: {
          method: values.method.toUpperCase(),
          path: values.path,
          query: pairs(values.query, '=', 'query'),
          headers,
          body,
          isBase64Encoded: false,
        },
      },
    );
    for (const l of outcome.logs) process.stderr.write(`[${l.stream}] ${l.line}\n`);
    process.stderr.write(
      `mayfly: call ${callId}: VM created in ${timings.createMs.toFixed(0)} ms, booted in ${timings.bootMs.toFixed(0)} ms ` +
        `(${host.driver.accel}: ${host.accelWhy}), handler loaded in ${timings.initMs.toFixed(0)} ms, ran in ${timings.invokeMs.toFixed(1)} ms\n`,
    );
    if (outcome.ok) {
      process.stdout.write(('value' in outcome ? JSON.stringify(outcome.value, null, 2) : 'undefined') + '\n');
      return 0;
    }
    process.stdout.write(JSON.stringify({ error: outcome.error }, null, 2) + '\n');
    return 1;
  } catch (err) {
    if (err instanceof InvocationError) {
      for (const l of err.logs) process.stderr.write(`[${l.stream}] ${l.line}\n`);
      process.stderr.write(`mayfly: ${err.code}: ${err.message}\n`);
      return 2;
    }
    throw err;
  } finally {
    await host.close();
  }
}
