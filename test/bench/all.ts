/**
 * `npm run bench`: every benchmark (issues 4 and 13) in sequence, each in its own
 * process (each cleans up its VMs and services), then their verdicts.
 * BENCH_ONLY=a,b runs a subset (names: vm-start, density, per-request,
 * per-function, throughput, breakdown). Every bench's own BENCH_* variables apply.
 * Exit code 1 when a bench failed to run (not when a target is missed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { machineLine } from './common.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ALL = ['breakdown', 'vm-start', 'density', 'per-request', 'per-function', 'throughput'];
const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim()).filter(Boolean);
const benches = only?.length ? ALL.filter((b) => only.includes(b)) : ALL;
if (only?.some((b) => !ALL.includes(b))) {
  process.stderr.write(`BENCH_ONLY: unknown bench in "${process.env.BENCH_ONLY}"; known: ${ALL.join(', ')}\n`);
  process.exit(2);
}

let current: ChildProcess | null = null;
let interrupted = false;
const onSignal = (sig: NodeJS.Signals) => {
  interrupted = true;
  // The child cleans up on its own signal handler; wait for it instead of exiting now.
  current?.kill(sig);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const verdicts: string[] = [];
const failed: string[] = [];
const t0 = performance.now();
process.stdout.write(`Mayfly benchmarks: ${benches.join(', ')}\n${machineLine()}\n`);
for (const b of benches) {
  if (interrupted) break;
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(HERE, `${b}.js`)], { stdio: ['ignore', 'pipe', 'inherit'] });
  current = child;
  let sawVerdict = false;
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    process.stdout.write(`${line}\n`);
    if (line.startsWith('verdict ')) {
      sawVerdict = true;
      verdicts.push(line);
    }
  });
  const code = await new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  current = null;
  process.stdout.write(`(${b}: ${((performance.now() - started) / 1000).toFixed(0)} s)\n`);
  if (code !== 0) failed.push(b);
  if (!sawVerdict) verdicts.push(`verdict ${b}: no verdict (exit code ${code})`);
}

process.stdout.write(`\n== summary (${((performance.now() - t0) / 1000).toFixed(0)} s) ==\n${verdicts.join('\n')}\n`);
if (interrupted) process.stdout.write('interrupted\n');
process.exitCode = failed.length || interrupted ? 1 : 0;
