/**
 * The gateway's HTTP layer: a Fastify 5 app in front of a GatewayBackend.
 * Routes: ./routes.ts. Errors: ./errors.ts. Metrics: ./metrics.ts.
 *
 * buildGateway returns the app without listening (and without `ready()`), so the
 * caller can still add plugins or routes before `listen()`; `inject()` works as is.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Authenticator } from './auth.js';
import type { GatewayBackend } from './backend.js';
import type { GatewayDeps, PackageBuilderPort, TokenAdmin } from './deps.js';
import { installErrorHandling } from './errors.js';
import { getInvocationContext } from './invocation-context.js';
import { countAsyncSubmissions, GatewayMetrics } from './metrics.js';
import { deployBodyLimit, registerRoutes } from './routes.js';

export interface GatewayOptions {
  backend: GatewayBackend;
  /** Invocation bodies (MAYFLY_MAX_BODY_BYTES): 413 above. */
  maxBodyBytes: number;
  /** Deploy bodies may be up to maxCodeBytes + 64 KiB: 413 above. */
  maxCodeBytes: number;
  version: { release: string; sha: string };
  /** Fastify's `logger` (boolean or pino options); a ready pino logger is passed as `loggerInstance`. */
  logger?: boolean | object;
  /** Authentication of the management API; absent = off (unit tests). */
  auth?: Authenticator;
  /** API token administration (/system/tokens); absent = those routes answer 501. */
  tokens?: TokenAdmin;
  /** Worker hosts from their heartbeats (GET /system/hosts, the console's Hosts page). */
  hosts?: GatewayDeps['hosts'];
  /** Builder of `package` deploys and the largest archive it takes; absent = those deploys answer 501. */
  packages?: PackageBuilderPort;
  maxPackageBytes?: number;
  /** Puller of `image` deploys (OpenFaaS images); absent = those deploys answer 501. */
  images?: GatewayDeps['images'];
}

function isLoggerInstance(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const l = v as Record<string, unknown>;
  return ['info', 'error', 'debug', 'fatal', 'warn', 'trace', 'child'].every((m) => typeof l[m] === 'function');
}

/**
 * Every log line about a call carries its id (`callId`): once the invocation
 * hooks have chosen it (or the route names one, /system/invocations/:callId),
 * the request's logger is bound to it, before the body is read, so body errors
 * and the "request completed" line have it too.
 */
function bindCallIdToLogs(app: FastifyInstance): void {
  app.addHook('preParsing', async (request, reply, payload) => {
    const param = (request.params as { callId?: unknown } | undefined)?.callId;
    const callId = getInvocationContext(request)?.callId ?? (typeof param === 'string' ? param.slice(0, 128) : undefined);
    if (callId !== undefined) {
      request.log = request.log.child({ callId });
      reply.log = request.log;
    }
    return payload;
  });
}

export async function buildGateway(opts: GatewayOptions): Promise<FastifyInstance> {
  const metrics = new GatewayMetrics();
  const deps: GatewayDeps = {
    backend: countAsyncSubmissions(opts.backend, metrics),
    metrics,
    maxBodyBytes: opts.maxBodyBytes,
    maxCodeBytes: opts.maxCodeBytes,
    version: opts.version,
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.tokens ? { tokens: opts.tokens } : {}),
    ...(opts.hosts ? { hosts: opts.hosts } : {}),
    ...(opts.packages ? { packages: opts.packages, maxPackageBytes: opts.maxPackageBytes ?? 0 } : {}),
    ...(opts.images ? { images: opts.images } : {}),
  };

  const logger = opts.logger ?? false;
  const fastifyOptions: FastifyServerOptions = {
    // Per-route limits are set in the route table; this is only the ceiling.
    bodyLimit: Math.max(opts.maxBodyBytes, deployBodyLimit(opts.maxCodeBytes, opts.packages ? opts.maxPackageBytes : 0)),
    // A too-long name must reach the handler (400 INVALID_NAME), not fall through to 404.
    routerOptions: { maxParamLength: 1024 },
  };
  if (isLoggerInstance(logger)) fastifyOptions.loggerInstance = logger as FastifyServerOptions['loggerInstance'];
  else fastifyOptions.logger = logger as FastifyServerOptions['logger'];

  const app = Fastify(fastifyOptions) as unknown as FastifyInstance;
  installErrorHandling(app);
  opts.auth?.install(app);
  bindCallIdToLogs(app);
  // Prometheus scrapes /metrics every few seconds: only problems of it are logged.
  app.addHook('onRoute', (route) => {
    if (route.url === '/metrics' && !route.logLevel) route.logLevel = 'warn';
  });
  await registerRoutes(app, deps);
  app.addHook('onClose', async () => {
    metrics.registry.clear();
  });
  return app;
}
