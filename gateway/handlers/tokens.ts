/**
 * API tokens (management API credentials that can be revoked):
 *   POST   /system/tokens        {"name": "ci"} → 201 {id, name, createdAt, token} (the token is shown once)
 *   GET    /system/tokens        [{id, name, createdAt}]
 *   DELETE /system/tokens/:id    revoke
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { z } from 'zod';
import type { GatewayDeps, TokenAdmin } from '../deps.js';
import { GatewayError, zodToGatewayError } from '../errors.js';

const createSchema = z.strictObject({ name: z.string().min(1).max(128) });

function admin(deps: GatewayDeps): TokenAdmin {
  if (!deps.tokens) throw new GatewayError(501, 'NOT_CONFIGURED', 'API tokens are not configured on this gateway');
  return deps.tokens;
}

export function createToken(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const body = request.body ?? {};
    const parsed = createSchema.safeParse(body);
    if (!parsed.success) throw zodToGatewayError(parsed.error, body, { code: 'INVALID_BODY', what: 'invalid request body' });
    return reply.code(201).send(await admin(deps).create(parsed.data.name));
  };
}

export function listTokens(deps: GatewayDeps): RouteHandlerMethod {
  return async () => admin(deps).list();
}

export function revokeToken(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const id = (request.params as { id?: unknown }).id;
    if (typeof id !== 'string' || !/^[a-z0-9]{12}$/.test(id)) throw new GatewayError(400, 'INVALID_TOKEN_ID', 'a token id is 12 characters of a-z0-9');
    if (!(await admin(deps).revoke(id))) throw new GatewayError(404, 'TOKEN_NOT_FOUND', `no token with id ${id}`);
    return reply.code(204).send();
  };
}
