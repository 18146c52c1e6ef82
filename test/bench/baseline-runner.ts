/**
 * Baseline "one process per request" (OpenFaaS classic watchdog's fork/exec
 * model): `node baseline-runner.js <handler.mjs>` reads the event as JSON on
 * stdin, runs the handler once, prints its value as JSON on stdout and exits.
 * The same handler file the benchmark deploys to Mayfly.
 */
import { pathToFileURL } from 'node:url';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: baseline-runner.js <handler.mjs>\n');
  process.exit(2);
}
const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const event = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as unknown;
const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
const handler = (mod.handler ?? mod.default) as (e: unknown, c: unknown) => unknown;
const deadline = Date.now() + 30_000;
const value = await handler(event, {
  functionName: 'baseline',
  callId: 'baseline',
  deadline,
  memoryLimitInMB: 128,
  getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
});
process.stdout.write(value === undefined ? '' : JSON.stringify(value));
