/**
 * GET /healthz, GET /system/info, GET /metrics.
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
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
