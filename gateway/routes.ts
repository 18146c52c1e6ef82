/**
 * The gateway's whole HTTP API in one table (OpenFaaS faas-provider style).
 * Handlers live in ./handlers/*; this file only says which URL goes where, with
 * which body handling and which body limit.
 *
 * Bodies:
 *   json — /system routes: the body is parsed as JSON whatever its Content-Type (or none).
 *   raw  — invocation routes: any content type, as raw bytes, handed to the function.
 *   none — no body expected.
 */
import type { FastifyInstance, HTTPMethods, onRequestAsyncHookHandler, RouteHandlerMethod } from 'fastify';
import type { GatewayDeps } from './deps.js';
import { GatewayError, type BodyLimitRouteConfig } from './errors.js';
import * as asyncCalls from './handlers/async.js';
import { consolePlugin } from './console/plugin.js';
import * as functions from './handlers/functions.js';
import * as hosts from './handlers/hosts.js';
import * as scale from './handlers/scale.js';
import * as invoke from './handlers/invoke.js';
import * as secrets from './handlers/secrets.js';
import * as system from './handlers/system.js';
import * as tokens from './handlers/tokens.js';
import * as triggers from './handlers/triggers.js';

/** Deploy bodies carry the code plus the spec around it. */
export const DEPLOY_BODY_OVERHEAD_BYTES = 64 * 1024;

/** Deploy bodies: the code, or a base64 package archive (4/3 of its size), plus the spec. */
export function deployBodyLimit(maxCodeBytes: number, maxPackageBytes = 0): number {
  return Math.max(maxCodeBytes, Math.ceil(maxPackageBytes / 3) * 4) + DEPLOY_BODY_OVERHEAD_BYTES;
}

export interface RouteSpec {
  method: HTTPMethods | 'ANY';
  url: string;
  body: 'json' | 'raw' | 'none';
  bodyLimit?: number;
  bodyLimitHint?: string;
  onRequest?: onRequestAsyncHookHandler;
  handler: RouteHandlerMethod;
}

export function routeTable(deps: GatewayDeps): RouteSpec[] {
  const deploy = {
    body: 'json' as const,
    bodyLimit: deployBodyLimit(deps.maxCodeBytes, deps.maxPackageBytes),
    bodyLimitHint: `function code may be at most ${deps.maxCodeBytes} bytes, MAYFLY_MAX_CODE_BYTES${deps.maxPackageBytes ? `; a package archive ${deps.maxPackageBytes} bytes before base64, MAYFLY_PACKAGE_MAX_BYTES` : ''}`,
  };
  const invocation = {
    body: 'raw' as const,
    bodyLimit: deps.maxBodyBytes,
    bodyLimitHint: 'MAYFLY_MAX_BODY_BYTES',
    onRequest: invoke.resolveInvocation(deps),
    handler: invoke.invoke(deps),
  };
  return [
    // ---- health, info, metrics
    { method: 'GET', url: '/healthz', body: 'none', handler: system.healthz(deps) },
    { method: 'GET', url: '/system/info', body: 'none', handler: system.systemInfo(deps) },
    { method: 'GET', url: '/metrics', body: 'none', handler: system.metrics(deps) },
    { method: 'GET', url: '/system/logs', body: 'none', handler: system.logs(deps) },

    // ---- functions (OpenFaaS provider API)
    { method: 'GET', url: '/system/functions', body: 'none', handler: functions.listFunctions(deps) },
    { method: 'POST', url: '/system/functions', ...deploy, handler: functions.deployFunction(deps) },
    { method: 'PUT', url: '/system/functions', ...deploy, handler: functions.updateFunction(deps) },
    { method: 'DELETE', url: '/system/functions', body: 'json', bodyLimit: 64 * 1024, handler: functions.deleteFunction(deps) },
    { method: 'GET', url: '/system/function/:name', body: 'none', handler: functions.getFunction(deps) },
    // ---- OpenFaaS namespaces (gateway/namespaces.ts): the one there is
    { method: 'GET', url: '/system/namespaces', body: 'none', handler: functions.listNamespaces() },
    // ---- OpenFaaS scaling: ready VMs per function (contracts/scale.ts)
    { method: 'POST', url: '/system/scale-function/:name', body: 'json', bodyLimit: 4096, handler: scale.scaleFunction(deps) },

    // ---- secrets (values in, names out)
    { method: 'POST', url: '/system/secrets', body: 'json', bodyLimit: 128 * 1024, handler: secrets.createSecret(deps) },
    { method: 'PUT', url: '/system/secrets', body: 'json', bodyLimit: 128 * 1024, handler: secrets.updateSecret(deps) },
    { method: 'GET', url: '/system/secrets', body: 'none', handler: secrets.listSecrets(deps) },
    { method: 'DELETE', url: '/system/secrets', body: 'json', bodyLimit: 4096, handler: secrets.deleteSecret(deps) },

    // ---- API tokens (management API credentials)
    { method: 'POST', url: '/system/tokens', body: 'json', bodyLimit: 4096, handler: tokens.createToken(deps) },
    { method: 'GET', url: '/system/tokens', body: 'none', handler: tokens.listTokens(deps) },
    { method: 'DELETE', url: '/system/tokens/:id', body: 'none', handler: tokens.revokeToken(deps) },

    // ---- synchronous invocation
    { method: 'ANY', url: '/function/:name', ...invocation },
    { method: 'ANY', url: '/function/:name/*', ...invocation },

    // ---- asynchronous invocation (stored in JetStream before the 202) and call records
    { method: 'POST', url: '/async-function/:name', ...invocation, handler: asyncCalls.asyncInvoke(deps) },
    { method: 'POST', url: '/async-function/:name/*', ...invocation, handler: asyncCalls.asyncInvoke(deps) },
    { method: 'DELETE', url: '/async-function/:callId', body: 'none', handler: asyncCalls.cancelCall(deps) },
    { method: 'GET', url: '/system/invocations', body: 'none', handler: asyncCalls.listCalls(deps) },
    { method: 'GET', url: '/system/invocations/:callId', body: 'none', handler: asyncCalls.getCall(deps) },

    // ---- worker hosts (from their heartbeats; read-only, for the console)
    { method: 'GET', url: '/system/hosts', body: 'none', handler: hosts.listHosts(deps) },
    // ---- triggers: NATS subjects and schedules (scheduler/triggers/)
    { method: 'GET', url: '/system/triggers', body: 'none', handler: triggers.listTriggers(deps) },
  ];
}

const JSON_TYPE = /^application\/(?:[^/;\s]+\+)?json$/i;

/**
 * /system bodies are JSON whatever the Content-Type says (like OpenFaaS, whose
 * handlers just decode JSON): `curl -d @spec.json` sends form-urlencoded, Go
 * clients may send none. A body that is not JSON is a 400 INVALID_JSON.
 */
function acceptJsonBodies(scope: FastifyInstance): void {
  const parseJson = scope.getDefaultJsonParser('error', 'error');
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', { parseAs: 'string' }, (request, body, done) => {
    // No body at all (a DELETE with a Content-Type header, say): the route decides whether it needs one.
    if (body === '' || (Buffer.isBuffer(body) && body.length === 0)) {
      done(null, undefined);
      return;
    }
    const ct = request.headers['content-type'];
    const mediaType = (ct ?? '').split(';')[0]?.trim() ?? '';
    parseJson(request, typeof body === 'string' ? body : body.toString('utf8'), (err, parsed) => {
      if (err && (err as { code?: unknown }).code === 'FST_ERR_CTP_INVALID_JSON_BODY' && ct !== undefined && !JSON_TYPE.test(mediaType)) {
        done(
          new GatewayError(400, 'INVALID_JSON', `request body is not valid JSON (it was sent as ${JSON.stringify(mediaType)}; send JSON, ideally with Content-Type: application/json)`),
          undefined,
        );
        return;
      }
      done(err, parsed);
    });
  });
}

function register(scope: FastifyInstance, r: RouteSpec): void {
  const config: BodyLimitRouteConfig = r.bodyLimitHint !== undefined ? { bodyLimitHint: r.bodyLimitHint } : {};
  const options = {
    config,
    ...(r.bodyLimit !== undefined ? { bodyLimit: r.bodyLimit } : {}),
    ...(r.onRequest !== undefined ? { onRequest: r.onRequest } : {}),
  };
  if (r.method === 'ANY') scope.all(r.url, options, r.handler);
  else scope.route({ method: r.method, url: r.url, ...options, handler: r.handler });
}

/** Registers the table: JSON routes and raw-body (invocation) routes in separate encapsulated scopes. */
export async function registerRoutes(app: FastifyInstance, deps: GatewayDeps): Promise<void> {
  const table = routeTable(deps);
  await app.register(async (scope) => {
    acceptJsonBodies(scope);
    for (const r of table) if (r.body !== 'raw') register(scope, r);
  });
  await app.register(async (scope) => {
    invoke.acceptRawBodies(scope, deps.maxBodyBytes);
    scope.addHook('onSend', invoke.addPlatformHeaders);
    for (const r of table) if (r.body === 'raw') register(scope, r);
  });
  // The web console (gateway/console): its page, assets and login under /ui/; its data come from the routes above.
  await app.register(consolePlugin(deps), { prefix: '/ui' });
}
