/**
 * Property-based tests (fast-check, fixed seed, bounded runs) of the gateway's
 * request parsing: any deploy body gets 202 or a 4xx with a message (never a
 * 5xx), and any invocation request becomes an event that satisfies the guest
 * protocol's schema.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { invocationEventSchema } from '../../contracts/guest-protocol.js';
import type { DeployRequest, FunctionRecord } from '../../contracts/functions.js';
import { buildGateway } from '../../gateway/app.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import { buildInvocationEvent } from '../../gateway/invocation-event.js';

const RUNS = { seed: 20261129, numRuns: 250 };

function record(req: DeployRequest): FunctionRecord {
  return {
    name: req.service, runtime: 'node', handler: req.handler, codeHash: 'h', codeBytes: req.code.length, envVars: req.envVars ?? {},
    memoryMiB: 128, timeoutMs: 1000, isolation: req.isolation, image: 'mayfly/node', labels: {}, annotations: {}, secrets: [],
    version: 1, createdAt: '', updatedAt: '',
  };
}

const backend: GatewayBackend = {
  createFunction: async (req) => record(req),
  updateFunction: async (req) => record(req),
  getFunction: async (name) => record({ service: name, runtime: 'node', code: 'x', handler: 'handler', isolation: 'per-request' }),
  listFunctions: async () => [],
  deleteFunction: async () => true,
  invoke: async (_fn, callId) => ({ callId, durationMs: 1, logs: [], outcome: { kind: 'value', value: 1 } }),
  submitAsync: async () => ({ duplicate: false }),
  getCall: async () => null,
  listCalls: async () => [],
  cancelCall: async () => ({ cancelled: false, record: null }),
  createSecret: async () => {},
  updateSecret: async () => {},
  listSecrets: async () => [],
  deleteSecret: async () => false,
  healthy: () => true,
};

let app: FastifyInstance;
beforeAll(async () => {
  app = await buildGateway({ backend, maxBodyBytes: 64 * 1024, maxCodeBytes: 16 * 1024, version: { release: 't', sha: 't' } });
});
afterAll(async () => {
  await app.close();
});

const field = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }));
const deployBody = fc.oneof(
  fc.jsonValue(),
  fc.record(
    {
      service: fc.oneof(fc.stringMatching(/^[a-z0-9-]{1,70}$/), field),
      code: fc.oneof(fc.string({ maxLength: 200 }), field),
      runtime: field, handler: field, envVars: field, limits: fc.oneof(field, fc.record({ memory: field })), timeout: field,
      isolation: fc.oneof(fc.constantFrom('per-request', 'per-function'), field), labels: field, annotations: field, secrets: field,
      extra: field,
    },
    { requiredKeys: [] },
  ),
);

describe('gateway request parsing (fuzzed)', () => {
  it('answers any deploy body with 202 or a 4xx that names the problem, never a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(deployBody, async (body) => {
        const r = await app.inject({ method: 'POST', url: '/system/functions', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) });
        expect(r.statusCode === 202 || (r.statusCode >= 400 && r.statusCode < 500)).toBe(true);
        if (r.statusCode !== 202) expect(r.json()).toMatchObject({ error: expect.any(String), code: expect.any(String) });
      }),
      RUNS,
    );
  });

  it('answers arbitrary raw bodies on /system routes with a 4xx', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'), async (bytes, ct) => {
        const r = await app.inject({ method: 'PUT', url: '/system/functions', headers: { 'content-type': ct }, payload: Buffer.from(bytes) });
        expect(r.statusCode >= 400 && r.statusCode < 500).toBe(true);
      }),
      RUNS,
    );
  });

  it('turns any invocation request into a valid event', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
        fc.webPath(),
        fc.webQueryParameters(),
        fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/), fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 3 })), { maxKeys: 8 }),
        fc.option(fc.uint8Array({ maxLength: 500 }), { nil: undefined }),
        fc.constantFrom(undefined, 'application/json', 'image/png', 'text/plain; charset=latin1', 'application/octet-stream'),
        (method, path, query, headers, body, ct) => {
          const event = buildInvocationEvent({
            method,
            url: `/function/f${path}${query ? `?${query}` : ''}`,
            headers: { ...headers, ...(ct ? { 'content-type': ct } : {}) },
            body: body ? Buffer.from(body) : undefined,
            callId: 'c1',
          });
          expect(invocationEventSchema.safeParse(event).success).toBe(true);
          if (body && event.isBase64Encoded) expect(Buffer.from(event.body, 'base64')).toEqual(Buffer.from(body));
        },
      ),
      RUNS,
    );
  });
});
