/**
 * `mayfly up` (what `npm start` runs): the whole platform on this machine.
 * Starts nats-server with JetStream (unless MAYFLY_NATS_URL is set, then that
 * server is used), builds the guest image with visible progress, then runs the
 * gateway, one scheduler and one worker as child processes. Ctrl-C / SIGTERM
 * stops them in reverse order (the worker destroys its VMs) and then NATS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, PROJECT_ROOT } from '../contracts/config.js';
import { ensureImage } from '../functions/image/build.js';
import { startNatsServer, type NatsServerHandle } from '../infra/nats/nats-server.js';
import { printProgress } from './progress.js';

const CLI = fileURLToPath(new URL('./mayfly.js', import.meta.url));

function startChild(service: string, env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [CLI, service], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  child.once('exit', (code, signal) => {
    if (!stopping) {
      process.stderr.write(`mayfly up: ${service} exited (${signal ?? code}); stopping the platform\n`);
      void stopAll(1);
    }
  });
  return child;
}

let stopping = false;
let children: Array<{ name: string; proc: ChildProcess }> = [];
let nats: NatsServerHandle | null = null;

async function stopAll(code: number): Promise<never> {
  stopping = true;
  for (const { name, proc } of [...children].reverse()) {
    if (proc.exitCode !== null || proc.signalCode !== null) continue;
    process.stderr.write(`mayfly up: stopping ${name}\n`);
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(timer);
  }
  if (nats) {
    process.stderr.write('mayfly up: stopping nats-server\n');
    await nats.stop();
  }
  process.exit(code);
}

export async function upCommand(): Promise<number> {
  const config = loadConfig();
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (!process.env.MAYFLY_NATS_URL) {
    nats = await startNatsServer({
      storeDir: path.join(config.MAYFLY_DATA_DIR, 'nats'),
      port: Number(new URL(config.MAYFLY_NATS_URL).port || 4222),
      logFile: path.join(config.MAYFLY_DATA_DIR, 'nats-server.log'),
    });
    process.stderr.write(`mayfly up: nats-server (JetStream) on ${nats.url}, data in ${nats.storeDir}\n`);
    env.MAYFLY_NATS_URL = nats.url;
  }
  // Build the image here, in the foreground, so its progress is visible before the worker starts.
  await ensureImage({
    runtime: 'node',
    cacheDir: config.MAYFLY_CACHE_DIR,
    agentDir: path.join(PROJECT_ROOT, 'dist'),
    compression: config.MAYFLY_IMAGE_COMPRESSION,
    onProgress: printProgress,
  });
  children = [
    { name: 'worker', proc: startChild('worker', env) },
    { name: 'scheduler', proc: startChild('scheduler', env) },
    { name: 'gateway', proc: startChild('gateway', env) },
  ];
  process.stderr.write(
    `mayfly up: gateway on http://${config.MAYFLY_HOST}:${config.MAYFLY_PORT} (Ctrl-C stops everything)\n`,
  );
  return new Promise<number>(() => {});
}
