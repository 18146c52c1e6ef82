/**
 * GET /healthz, GET /system/info, GET /metrics, GET /system/logs.
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { logsFromRecords, parseLogsQuery, toNdjson } from '../../lib/function-logs.js';
import type { GatewayDeps } from '../deps.js';
import { GatewayError } from '../errors.js';

/** 200 "OK" while the backend can serve (NATS connected), 503 otherwise. */
export function healthz(deps: GatewayDeps): RouteHandlerMethod {
  return async (_request: FastifyRequest, reply: FastifyReply) => {
    if (!deps.backend.healthy()) {
      throw new GatewayError(503, 'UNAVAILABLE', 'the gateway cannot reach its backend (NATS); retry later');
    }
    return reply.type('text/plain; charset=utf-8').send('OK');
  };
}

/** The shape faas-cli reads (`provider.version` is an object). */
export interface SystemInfo {
  provider: { provider: string; orchestration: string; version: { release: string; sha: string } };
  version: { release: string; sha: string; commit_message: string };
  arch: string;
}

/** uname-style machine name of this host ("x86_64" on x64). */
export function machineArch(arch: string = process.arch): string {
  return ({ x64: 'x86_64', arm64: 'aarch64', ia32: 'i686' } as Record<string, string>)[arch] ?? arch;
}

export function systemInfo(deps: GatewayDeps): RouteHandlerMethod {
  const { release, sha } = deps.version;
  const info: SystemInfo = {
    provider: { provider: 'mayfly', orchestration: 'vm', version: { release, sha } },
    version: { release, sha, commit_message: '' },
    arch: machineArch(),
  };
  return async (_request: FastifyRequest, reply: FastifyReply) => reply.send(info);
}

/** Prometheus text of this gateway's registry; gateway_service_count is refreshed first. */
export function metrics(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    try {
      const fns = await deps.backend.listFunctions();
      deps.metrics.setServices(fns.map((f) => f.name));
    } catch (err) {
      // Metrics must still be served when the backend is down (that is when they matter).
      request.log.warn({ err }, 'could not list functions for gateway_service_count');
    }
    return reply.type(deps.metrics.contentType()).send(await deps.metrics.text());
  };
}

/** Records read for logs when the backend has no functionLogs (in-memory backends). */
const LOGS_FALLBACK_RECORDS = 1000;

/**
 * GET /system/logs?name=&tail=&since= (OpenFaaS logs API): the function's log
 * lines from its call records, oldest first, as NDJSON
 * `{"name","instance","timestamp","text","callId","stream"}`. `follow` is
 * accepted and ignored: the response ends with the lines stored so far.
 */
export function logs(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const parsed = parseLogsQuery(request.query as Record<string, unknown>);
    if (!parsed.ok) throw new GatewayError(400, 'INVALID_QUERY', parsed.message, { field: parsed.field });
    const { query } = parsed;
    if (!(await deps.backend.getFunction(query.name))) {
      throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${query.name}" not found`);
    }
    const entries = deps.backend.functionLogs
      ? await deps.backend.functionLogs(query)
      : logsFromRecords(await deps.backend.listCalls({ function: query.name, limit: LOGS_FALLBACK_RECORDS }), query);
    return reply.type('application/x-ndjson; charset=utf-8').send(toNdjson(entries));
  };
}
