/**
 * Secrets (OpenFaaS provider shape): values go in, only names come out.
 *   POST   /system/secrets  {"name","value"} → 201; 409 when it exists
 *   PUT    /system/secrets  {"name","value"} → 200; 404 when it does not
 *   GET    /system/secrets  → [{name, createdAt, updatedAt}]
 *   DELETE /system/secrets  {"name"} → 204; 404
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { z } from 'zod';
import { SecretError, secretNameSchema, secretSchema } from '../../lib/secrets.js';
import type { GatewayDeps } from '../deps.js';
import { GatewayError, zodToGatewayError } from '../errors.js';
import { checkNamespace, stripNamespace } from '../namespaces.js';

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === undefined) throw new GatewayError(400, 'INVALID_BODY', 'request body is missing; send {"name": ..., "value": ...} as JSON');
  const r = schema.safeParse(withoutNamespace(body));
  if (!r.success) throw zodToGatewayError(r.error, body, { code: 'INVALID_BODY', what: 'invalid request body' });
  return r.data;
}

/** faas-cli may send `"namespace"` and a name with `.openfaas-fn`: both mean the one namespace (gateway/namespaces.ts). */
function withoutNamespace(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const { namespace, ...rest } = body as Record<string, unknown>;
  if (namespace !== undefined) checkNamespace(typeof namespace === 'string' ? namespace : String(namespace));
  return typeof rest.name === 'string' ? { ...rest, name: stripNamespace(rest.name, 'secret') } : rest;
}

function mapSecretError(err: unknown): never {
  if (err instanceof SecretError) {
    throw new GatewayError(err.code === 'NOT_FOUND' ? 404 : 409, err.code === 'NOT_FOUND' ? 'SECRET_NOT_FOUND' : 'SECRET_EXISTS', err.message);
  }
  throw err;
}

export function createSecret(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const { name, value } = parse(secretSchema, request.body);
    await deps.backend.createSecret(name, value).catch(mapSecretError);
    request.log.info({ secret: name }, 'secret created');
    return reply.code(201).send({ name });
  };
}

export function updateSecret(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const { name, value } = parse(secretSchema, request.body);
    await deps.backend.updateSecret(name, value).catch(mapSecretError);
    request.log.info({ secret: name }, 'secret updated');
    return reply.code(200).send({ name });
  };
}

export function listSecrets(deps: GatewayDeps): RouteHandlerMethod {
  return async () => deps.backend.listSecrets();
}

export function deleteSecret(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const { name } = parse(z.strictObject({ name: secretNameSchema }), request.body);
    if (!(await deps.backend.deleteSecret(name))) throw new GatewayError(404, 'SECRET_NOT_FOUND', `secret "${name}" not found`);
    return reply.code(204).send();
  };
}
