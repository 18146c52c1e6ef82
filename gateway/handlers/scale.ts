/**
 * POST /system/scale-function/{name} (OpenFaaS provider API, `faas-cli` and the
 * OpenFaaS dashboard send it): `{"serviceName": "...", "replicas": N, "namespace"?}`.
 * Sets how many ready VMs the function keeps (contracts/scale.ts); 202.
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { z } from 'zod';
import { scaleLimits, ScaleLabelError } from '../../contracts/scale.js';
import type { GatewayDeps } from '../deps.js';
import { GatewayError, zodToGatewayError } from '../errors.js';
import { checkNamespace } from '../namespaces.js';
import { parseFunctionName } from '../validation.js';
import { readyReplicas, toFunctionStatus } from './functions.js';

const scaleRequestSchema = z.object({
  serviceName: z.string().max(200).optional(),
  replicas: z.number().int().nonnegative(),
  namespace: z.string().max(63).optional(),
});

export function scaleFunction(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const name = parseFunctionName((request.params as { name?: unknown }).name);
    if (request.body === undefined) throw new GatewayError(400, 'INVALID_BODY', 'request body is missing; send {"serviceName": "<name>", "replicas": <n>}');
    const r = scaleRequestSchema.safeParse(request.body);
    if (!r.success) throw zodToGatewayError(r.error, request.body, { code: 'INVALID_BODY', what: 'invalid request body' });
    checkNamespace(r.data.namespace);
    if (!deps.backend.scaleFunction) throw new GatewayError(501, 'NOT_CONFIGURED', 'this gateway cannot scale functions');
    const fn = await deps.backend.getFunction(name);
    if (!fn) throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${name}" not found`);
    let max: number;
    try {
      max = scaleLimits(fn).max;
    } catch (err) {
      if (err instanceof ScaleLabelError) throw new GatewayError(400, 'INVALID_LABEL', err.message, { field: `labels.${err.label}` });
      throw err;
    }
    if (r.data.replicas > max) {
      throw new GatewayError(400, 'INVALID_BODY', `replicas: ${r.data.replicas} is above the function's maximum of ${max} (label com.openfaas.scale.max, at most 32)`, { field: 'replicas' });
    }
    const scaled = await deps.backend.scaleFunction(name, r.data.replicas);
    if (!scaled) throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${name}" not found`);
    request.log.info({ function: name, replicas: r.data.replicas }, 'function scaled');
    return reply.code(202).send(toFunctionStatus(scaled, deps.metrics.invocationCount(name), readyReplicas(deps, scaled)));
  };
}
