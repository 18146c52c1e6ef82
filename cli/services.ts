/**
 * `mayfly gateway|scheduler|worker`: each service on its own, configured by
 * MAYFLY_* environment variables (contracts/config.ts). SIGINT/SIGTERM stop it
 * gracefully (the worker destroys its VMs).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, PROJECT_ROOT, type MayflyConfig } from '../contracts/config.js';
import { buildGateway } from '../gateway/app.js';
import { createNatsBackend } from '../gateway/nats-backend.js';
import { createLogger } from '../lib/logger.js';
import { startScheduler } from '../scheduler/service.js';
import { startWorker } from '../worker/service.js';

function version(): { release: string; sha: string } {
  const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
  let sha = 'unknown';
  try {
    sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    // not a git checkout
  }
  return { release: pkg.version, sha };
}

/** Runs until SIGINT/SIGTERM, then calls stop once. */
function untilSignal(stop: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = () => {
      if (stopping) return;
      stopping = true;
      stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
}

export async function gatewayCommand(config: MayflyConfig = loadConfig()): Promise<number> {
  const { backend, close } = await createNatsBackend(config);
  const app = await buildGateway({
    backend,
    maxBodyBytes: config.MAYFLY_MAX_BODY_BYTES,
    maxCodeBytes: config.MAYFLY_MAX_CODE_BYTES,
    version: version(),
    logger: { level: process.env.MAYFLY_LOG_LEVEL ?? 'info', name: 'mayfly-gateway' },
  });
  await app.listen({ host: config.MAYFLY_HOST, port: config.MAYFLY_PORT });
  return untilSignal(async () => {
    await app.close();
    await close();
  });
}

export async function schedulerCommand(config: MayflyConfig = loadConfig()): Promise<number> {
  const log = createLogger('scheduler');
  const svc = await startScheduler(config, log);
  log.info({ nats: config.MAYFLY_NATS_URL }, 'scheduler ready');
  return untilSignal(() => svc.stop());
}

export async function workerCommand(config: MayflyConfig = loadConfig()): Promise<number> {
  const log = createLogger('worker');
  const svc = await startWorker(config, log);
  log.info({ hostId: svc.hostId, nats: config.MAYFLY_NATS_URL }, 'worker ready');
  return untilSignal(async () => {
    log.info('worker stopping: finishing running calls, destroying VMs');
    await svc.stop();
  });
}
