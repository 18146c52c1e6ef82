/**
 * Package deploys through the gateway's HTTP layer (app.inject) with a fake
 * builder: what is stored, how builder errors map to HTTP, and that a failed
 * build stores nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { DeployRequest, FunctionRecord } from '../../contracts/functions.js';
import { buildGateway } from '../../gateway/app.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import type { PackageBuilderPort } from '../../gateway/deps.js';
import { PackageError } from '../../functions/package/errors.js';
import { deployBodyLimit } from '../../gateway/routes.js';

function backend(): { b: GatewayBackend; stored: DeployRequest[]; fns: Map<string, FunctionRecord> } {
  const stored: DeployRequest[] = [];
  const fns = new Map<string, FunctionRecord>();
  const rec = (req: DeployRequest, version: number): FunctionRecord => ({
    name: req.service, runtime: 'node', handler: req.handler, codeHash: 'h', codeBytes: req.code.length, envVars: {}, memoryMiB: 128, timeoutMs: 30000,
    isolation: req.isolation, image: 'mayfly/node', labels: {}, annotations: {}, secrets: [], version, createdAt: 'c', updatedAt: 'u',
  });
  const b = {
    async createFunction(req: DeployRequest) {
      stored.push(req);
      const r = rec(req, 1);
      fns.set(req.service, r);
      return r;
    },
    async updateFunction(req: DeployRequest) {
      stored.push(req);
      const r = rec(req, (fns.get(req.service)?.version ?? 0) + 1);
      fns.set(req.service, r);
      return r;
    },
    async getFunction(name: string) {
      return fns.get(name) ?? null;
    },
    async listFunctions() {
      return [...fns.values()];
    },
    healthy: () => true,
  } as unknown as GatewayBackend;
  return { b, stored, fns };
}

let app: FastifyInstance | null = null;
afterEach(async () => {
  await app?.close();
  app = null;
});

async function gateway(packages?: PackageBuilderPort) {
  const be = backend();
  app = await buildGateway({ backend: be.b, maxBodyBytes: 1 << 20, maxCodeBytes: 4096, version: { release: 't', sha: 't' }, ...(packages ? { packages, maxPackageBytes: 300_000 } : {}) });
  return { app, ...be };
}

const archive = Buffer.from('fake archive').toString('base64');

describe('package deploys in the gateway', () => {
  it('stores the bundle the builder made, keeps the handler name, and answers with the build report', async () => {
    const seen: Array<[string, string]> = [];
    const g = await gateway({
      async build(a, handler) {
        seen.push([a.toString(), handler]);
        return { code: 'export const handler = () => 1;', handler: 'handler', report: { totalMs: 5 } };
      },
    });
    const r = await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: archive, handler: 'src/index.handler' } });
    expect(r.statusCode).toBe(202);
    expect(r.json()).toMatchObject({ name: 'p', handler: 'src/index.handler', build: { totalMs: 5 } });
    expect(seen).toEqual([['fake archive', 'src/index.handler']]);
    expect(g.stored[0]).toMatchObject({ service: 'p', code: 'export const handler = () => 1;', handler: 'src/index.handler' });
    expect(g.stored[0]).not.toHaveProperty('package');
  });

  it('maps a PackageError to its status and code, naming the file, and stores nothing', async () => {
    const g = await gateway({
      async build() {
        throw new PackageError('NATIVE_ADDON', 'node_modules/x/x.node is a native addon', 'node_modules/x/x.node');
      },
    });
    const r = await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: archive } });
    expect(r.statusCode).toBe(422);
    expect(r.json()).toEqual({ error: 'function package: node_modules/x/x.node is a native addon', code: 'NATIVE_ADDON', file: 'node_modules/x/x.node' });
    expect(g.stored).toEqual([]);
  });

  it('refuses code and package together, neither, bad base64, and packages without a builder', async () => {
    const g = await gateway({ build: async () => ({ code: 'x', handler: 'handler', report: {} }) });
    const both = await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: archive, code: 'x' } });
    expect(both.statusCode).toBe(400);
    expect(both.json().error).toMatch(/either "code" or "package", not both/);
    const neither = await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p' } });
    expect(neither.statusCode).toBe(400);
    expect(neither.json().error).toMatch(/code: is required .* or send "package".*or "image"/);
    // An image deploy on a gateway without an image puller (OpenFaaS images: gateway-openfaas.test.ts).
    const image = await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', image: 'ghcr.io/x/y' } });
    expect(image.statusCode).toBe(501);
    expect(image.json()).toMatchObject({ code: 'NOT_CONFIGURED' });
    const b64 = await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: 'not base64!' } });
    expect(b64.statusCode).toBe(400);
    expect(b64.json()).toMatchObject({ code: 'INVALID_BODY', field: 'package' });
    await app!.close();
    const none = await gateway();
    const r = await none.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: archive } });
    expect(r.statusCode).toBe(501);
  });

  it('checks existence before building: POST of an existing function 409, PUT of a missing one 404', async () => {
    let builds = 0;
    const g = await gateway({ build: async () => (builds++, { code: 'x', handler: 'handler', report: {} }) });
    expect((await g.app.inject({ method: 'PUT', url: '/system/functions', payload: { service: 'p', package: archive } })).statusCode).toBe(404);
    expect((await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: archive } })).statusCode).toBe(202);
    expect((await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: archive } })).statusCode).toBe(409);
    expect(builds).toBe(1);
  });

  it('sizes the deploy body limit for a base64 archive', async () => {
    expect(deployBodyLimit(4096, 300_000)).toBe(400_000 + 64 * 1024);
    expect(deployBodyLimit(1 << 20)).toBe((1 << 20) + 64 * 1024);
    const g = await gateway({ build: async () => ({ code: 'x', handler: 'handler', report: {} }) });
    const big = Buffer.alloc(301_000).toString('base64');
    expect((await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'p', package: big } })).statusCode).toBe(202);
    const tooBig = Buffer.alloc(360_000).toString('base64');
    expect((await g.app.inject({ method: 'POST', url: '/system/functions', payload: { service: 'q', package: tooBig } })).statusCode).toBe(413);
  });
});
