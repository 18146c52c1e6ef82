/**
 * `mayfly up` (what `npm start` runs): the whole platform on this machine.
 * Starts nats-server with JetStream (unless MAYFLY_NATS_URL is set, then that
 * server is used), builds the guest image with visible progress, then runs the
 * gateway, one scheduler and one worker as child processes. Ctrl-C / SIGTERM
 * stops them in reverse order (the worker destroys its VMs) and then NATS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../contracts/config.js';
import { ensureConfiguredImage } from '../functions/image/image-options.js';
import { startNatsServer, type NatsServerHandle } from '../infra/nats/nats-server.js';
import { adminPassword } from '../lib/credentials.js';
import { prometheusSdFile } from '../lib/prometheus-sd.js';
import { renderPrometheusConfig, SHIPPED_PROMETHEUS_CONFIG, startPrometheus, type PrometheusHandle } from '../lib/prometheus-server.js';
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
let prometheus: PrometheusHandle | null = null;

/**
 * Writes <data dir>/prometheus/prometheus.yml (the shipped config pointing at
 * this platform's targets file) and runs Debian's prometheus with it when
 * MAYFLY_PROMETHEUS=1; otherwise prints how to. A failing Prometheus is only a warning.
 */
async function observability(config: ReturnType<typeof loadConfig>): Promise<void> {
  const sdFile = prometheusSdFile(config);
  if (!sdFile) return;
  const dir = path.join(config.MAYFLY_DATA_DIR, 'prometheus');
  if (config.MAYFLY_PROMETHEUS) {
    try {
      prometheus = await startPrometheus({ dir, sdFile, port: config.MAYFLY_PROMETHEUS_PORT, logFile: path.join(config.MAYFLY_DATA_DIR, 'prometheus.log') });
      process.stderr.write(`mayfly up: prometheus on ${prometheus.url} (targets from ${sdFile})\n`);
    } catch (err) {
      process.stderr.write(`mayfly up: prometheus did not start: ${(err as Error).message}; the platform runs without it\n`);
    }
    return;
  }
  const configFile = path.join(dir, 'prometheus.yml');
  try {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(configFile, renderPrometheusConfig(fs.readFileSync(SHIPPED_PROMETHEUS_CONFIG, 'utf8'), { sdFile }));
    process.stderr.write(
      `mayfly up: metrics targets in ${sdFile}; Prometheus: prometheus --config.file=${configFile} ` +
        `--storage.tsdb.path=${path.join(dir, 'tsdb')} --web.listen-address=127.0.0.1:${config.MAYFLY_PROMETHEUS_PORT} (or MAYFLY_PROMETHEUS=1 npm start)\n`,
    );
  } catch (err) {
    process.stderr.write(`mayfly up: could not write ${configFile}: ${(err as Error).message}\n`);
  }
}

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
  if (prometheus) {
    process.stderr.write('mayfly up: stopping prometheus\n');
    await prometheus.stop();
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
  if (config.MAYFLY_AUTH) {
    const password = adminPassword(config);
    process.stderr.write(
      `mayfly up: management API user "${config.MAYFLY_ADMIN_USER}", password ${password.source === 'env' ? 'from MAYFLY_ADMIN_PASSWORD' : `in ${password.source}`}` +
        `${password.generated ? ' (generated now)' : ''}; e.g. curl -u ${config.MAYFLY_ADMIN_USER}:$(cat ${password.source === 'env' ? '<file>' : password.source}) ...\n`,
    );
  }
  // Build the image here, in the foreground, so its progress is visible before the worker starts.
  await ensureConfiguredImage(config, { onProgress: printProgress });
  children = [
    { name: 'worker', proc: startChild('worker', env) },
    { name: 'scheduler', proc: startChild('scheduler', env) },
    { name: 'gateway', proc: startChild('gateway', env) },
  ];
  process.stderr.write(
    `mayfly up: gateway on http://${config.MAYFLY_HOST}:${config.MAYFLY_PORT} (Ctrl-C stops everything)\n`,
  );
  await observability(config);
  return new Promise<number>(() => {});
}
