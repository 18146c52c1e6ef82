/**
 * `mayfly gateway|scheduler|worker`: each service on its own, configured by
 * MAYFLY_* environment variables (contracts/config.ts). SIGINT/SIGTERM stop it
 * gracefully (the worker destroys its VMs).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { loadConfig, PROJECT_ROOT, type MayflyConfig } from '../contracts/config.js';
import { buildGateway } from '../gateway/app.js';
import { Authenticator } from '../gateway/auth.js';
import { createNatsBackend } from '../gateway/nats-backend.js';
import { ConsoleSessions, sessionKeyFrom } from '../gateway/console/session.js';
import { adminPassword, secretsKey } from '../lib/credentials.js';
import { HostDirectory } from '../lib/host-directory.js';
import { PackageBuilder, packageBuilderOptions } from '../functions/package/builder.js';
import { ImagePuller, pullOptions } from '../functions/oci/puller.js';
import { TokenStore } from '../lib/tokens.js';
import { createLogger } from '../lib/logger.js';
import { announceMetrics, processId } from '../lib/metrics-announcer.js';
import { advertisedHost } from '../lib/metrics.js';
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
  const { backend, nc, close } = await createNatsBackend(config);
  const tokens = await TokenStore.open(nc);
  let auth: Authenticator | undefined;
  if (config.MAYFLY_AUTH) {
    const password = adminPassword(config);
    if (password.generated) process.stderr.write(`mayfly gateway: generated the admin password into ${password.source} (mode 0600)\n`);
    auth = new Authenticator({
      enabled: true,
      adminUser: config.MAYFLY_ADMIN_USER,
      adminPassword: password.value,
      tokens,
      metricsAuth: config.MAYFLY_METRICS_AUTH,
      sessions: new ConsoleSessions({
        key: sessionKeyFrom(secretsKey(config).key),
        ttlMs: config.MAYFLY_CONSOLE_SESSION_TTL_MS,
        tokenAlive: async (id) => (await tokens.list()).some((t) => t.id === id),
      }),
    });
  } else {
    process.stderr.write('mayfly gateway: WARNING: authentication is off (MAYFLY_AUTH=off): anyone who reaches the gateway can deploy code\n');
  }
  const hosts = new HostDirectory(config.MAYFLY_HOST_TTL_MS);
  const stopHosts = hosts.subscribe(nc);
  const app = await buildGateway({
    backend,
    maxBodyBytes: config.MAYFLY_MAX_BODY_BYTES,
    maxCodeBytes: config.MAYFLY_MAX_CODE_BYTES,
    version: version(),
    logger: { level: process.env.MAYFLY_LOG_LEVEL ?? 'info', name: 'mayfly-gateway' },
    ...(auth ? { auth } : {}),
    tokens,
    hosts,
    packages: new PackageBuilder(packageBuilderOptions(config)),
    maxPackageBytes: config.MAYFLY_PACKAGE_MAX_BYTES,
    images: new ImagePuller(pullOptions(config)),
  });
  await app.listen({ host: config.MAYFLY_HOST, port: config.MAYFLY_PORT });
  // For the scheduler's Prometheus targets file (see README, Observability).
  const port = (app.server.address() as AddressInfo).port;
  const announcer = announceMetrics(
    nc,
    { service: 'gateway', id: processId('gateway'), url: `http://${advertisedHost(config.MAYFLY_HOST)}:${port}/metrics` },
    config.MAYFLY_HEARTBEAT_MS,
  );
  return untilSignal(async () => {
    announcer.stop();
    stopHosts();
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
