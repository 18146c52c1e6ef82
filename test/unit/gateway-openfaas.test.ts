/**
 * The OpenFaaS provider API details of the gateway (image deploys, namespaces,
 * scale-function, scale labels) through app.inject(), against an in-memory
 * backend and a fake image puller (the real puller: test/unit/oci-pull.test.ts;
 * the whole thing with VMs: test/e2e/openfaas-images.test.ts).
 */
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeployRequest, FunctionRecord } from '../../contracts/functions.js';
import { desiredReplicas } from '../../contracts/scale.js';
import { ImageError } from '../../functions/oci/errors.js';
import { buildGateway } from '../../gateway/app.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import type { ImagePullerPort } from '../../gateway/deps.js';
import { FunctionStoreError } from '../../lib/function-store.js';

class Backend {
  readonly fns = new Map<string, FunctionRecord>();
  readonly secrets = new Map<string, string>();
  private record(req: DeployRequest, version: number): FunctionRecord {
    const { data: _data, ...rootfs } = req.rootfs ?? { data: undefined };
    return {
      name: req.service,
      runtime: 'node',
      handler: req.handler,
      codeHash: 'h',
      codeBytes: req.code.length,
      envVars: req.envVars ?? {},
      memoryMiB: 128,
      timeoutMs: 30_000,
      isolation: req.isolation,
      image: req.image ?? 'mayfly/node',
      labels: req.labels ?? {},
      annotations: req.annotations ?? {},
      secrets: req.secrets ?? [],
      ...(req.rootfs ? { rootfs: rootfs as NonNullable<FunctionRecord['rootfs']>, envProcess: req.envProcess ?? '' } : {}),
      version,
      createdAt: '',
      updatedAt: '',
    };
  }
  async createFunction(req: DeployRequest) {
    if (this.fns.has(req.service)) throw new FunctionStoreError('ALREADY_EXISTS', 'exists');
    const r = this.record(req, 1);
    this.fns.set(r.name, r);
    return r;
  }
  async updateFunction(req: DeployRequest) {
    const old = this.fns.get(req.service);
    if (!old) throw new FunctionStoreError('NOT_FOUND', `function "${req.service}" not found`);
    const r = this.record(req, old.version + 1);
    this.fns.set(r.name, r);
    return r;
  }
  async getFunction(name: string) {
    return this.fns.get(name) ?? null;
  }
  async listFunctions() {
    return [...this.fns.values()];
  }
  async deleteFunction(name: string) {
    return this.fns.delete(name);
  }
  async scaleFunction(name: string, replicas: number) {
    const f = this.fns.get(name);
    if (!f) return null;
    const r = { ...f, replicas };
    this.fns.set(name, r);
    return r;
  }
  async createSecret(name: string, value: string) {
    this.secrets.set(name, value);
  }
  healthy() {
    return true;
  }
}

const pulls: Array<{ image: string; envProcess?: string }> = [];
const images: ImagePullerPort = {
  async pull(image, envProcess) {
    pulls.push({ image, ...(envProcess !== undefined ? { envProcess } : {}) });
    if (image.includes('tampered')) throw new ImageError('IMAGE_DIGEST_MISMATCH', 'layer 1 does not match its digest');
    if (image.includes('arm')) throw new ImageError('IMAGE_WRONG_ARCHITECTURE', 'image is for linux/arm64');
    return {
      code: JSON.stringify({ v: 1, mode: 'classic', process: (envProcess ?? 'cat').split(' '), env: {}, workdir: '/' }),
      envProcess: envProcess ?? 'cat',
      rootfs: { reference: `${image}@sha256:${'1'.repeat(64)}`, digest: `sha256:${'1'.repeat(64)}`, object: `rootfs-${'2'.repeat(64)}`, sha256: '2'.repeat(64), bytes: 3, unpackedBytes: 5, data: new Uint8Array([1, 2, 3]) },
      report: { pullMs: 1 },
    };
  },
};

let backend: Backend;
let app: FastifyInstance;
beforeEach(async () => {
  backend = new Backend();
  pulls.length = 0;
  app = await buildGateway({ backend: backend as unknown as GatewayBackend, maxBodyBytes: 4096, maxCodeBytes: 4096, version: { release: 't', sha: 't' }, images });
});
afterEach(async () => {
  await app.close();
});

const json = (method: 'POST' | 'PUT' | 'DELETE' | 'GET', url: string, payload?: unknown) =>
  app.inject({ method, url, headers: { 'content-type': 'application/json', 'user-agent': 'faas-cli/0.17.0' }, ...(payload !== undefined ? { payload: JSON.stringify(payload) } : {}) });

describe('OpenFaaS provider API details', () => {
  it('deploys an image the way faas-cli does (PUT → 404 → POST) and shows image and envProcess', async () => {
    const body = { service: 'stronghash', image: 'reg:5000/functions/alpine:latest', namespace: 'openfaas-fn', envProcess: 'sha512sum', labels: null, annotations: null, limits: { memory: '128Mi', cpu: '100m' }, readOnlyRootFilesystem: true };
    expect((await json('PUT', '/system/functions', body)).statusCode).toBe(404);
    const r = await json('POST', '/system/functions', body);
    expect(r.statusCode, r.body).toBe(202);
    expect(r.json()).toMatchObject({ name: 'stronghash', image: 'reg:5000/functions/alpine:latest', envProcess: 'sha512sum', build: { image: { pullMs: 1 } } });
    expect(pulls).toEqual([{ image: 'reg:5000/functions/alpine:latest', envProcess: 'sha512sum' }]);
    const d = await json('GET', '/system/function/stronghash.openfaas-fn');
    expect(d.json()).toMatchObject({ envProcess: 'sha512sum', replicas: 1, availableReplicas: 1 });
    // The same name again with POST: 409 before any pull.
    expect((await json('POST', '/system/functions', body)).statusCode).toBe(409);
    expect(pulls).toHaveLength(1);
  });

  it('maps each image error to its status and stores nothing', async () => {
    const t = await json('POST', '/system/functions', { service: 'bad', image: 'reg/tampered:1' });
    expect(t.statusCode).toBe(502);
    expect(t.json()).toMatchObject({ code: 'IMAGE_DIGEST_MISMATCH', field: 'image' });
    const a = await json('POST', '/system/functions', { service: 'bad', image: 'reg/arm:1' });
    expect(a.statusCode).toBe(422);
    expect(a.json()).toMatchObject({ code: 'IMAGE_WRONG_ARCHITECTURE' });
    expect(backend.fns.size).toBe(0);
    // No code, no package, no image: still the 400 naming all three.
    const none = await json('POST', '/system/functions', { service: 'none' });
    expect(none.statusCode).toBe(400);
    expect(none.json().error).toContain('"image"');
  });

  it('namespaces: one, openfaas-fn; others are 404s; names with the suffix work everywhere', async () => {
    expect((await json('GET', '/system/namespaces')).json()).toEqual(['openfaas-fn']);
    expect((await json('POST', '/system/functions', { service: 'fn.openfaas-fn', code: 'x' })).statusCode).toBe(202);
    expect(backend.fns.has('fn')).toBe(true);
    const other = await json('POST', '/system/functions', { service: 'fn2', code: 'x', namespace: 'dev' });
    expect(other.statusCode).toBe(404);
    expect(other.json()).toMatchObject({ code: 'NAMESPACE_NOT_FOUND' });
    expect(other.json().error).toContain('openfaas-fn');
    expect((await json('GET', '/system/function/fn?namespace=dev')).statusCode).toBe(404);
    expect((await json('GET', '/system/function/fn.dev')).statusCode).toBe(404);
    expect((await json('GET', '/system/function/.openfaas-fn')).statusCode).toBe(404);
    const s = await json('POST', '/system/secrets', { name: 'key.openfaas-fn', value: 'v', namespace: 'openfaas-fn' });
    expect(s.statusCode).toBe(201);
    expect(backend.secrets.get('key')).toBe('v');
    expect((await json('DELETE', '/system/functions', { functionName: 'fn.openfaas-fn', namespace: 'openfaas-fn' })).statusCode).toBe(202);
    expect(backend.fns.size).toBe(0);
  });

  it('scale labels and scale-function: replicas, bounds, 404s', async () => {
    const bad = await json('POST', '/system/functions', { service: 'sc', code: 'x', labels: { 'com.openfaas.scale.min': '-1' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ code: 'INVALID_LABEL', field: 'labels.com.openfaas.scale.min' });
    const inverted = await json('POST', '/system/functions', { service: 'sc', code: 'x', labels: { 'com.openfaas.scale.min': '4', 'com.openfaas.scale.max': '3' } });
    expect(inverted.statusCode).toBe(400);
    const ok = await json('POST', '/system/functions', { service: 'sc', code: 'x', labels: { 'com.openfaas.scale.min': '2', 'com.openfaas.scale.max': '3' } });
    expect(ok.json()).toMatchObject({ replicas: 2, availableReplicas: 0 });
    const scale = (name: string, body: unknown) => json('POST', `/system/scale-function/${name}`, body);
    expect((await scale('sc', { serviceName: 'sc', replicas: 4 })).statusCode).toBe(400);
    expect((await scale('sc', { serviceName: 'sc', replicas: -1 })).statusCode).toBe(400);
    expect((await scale('ghost', { serviceName: 'ghost', replicas: 1 })).statusCode).toBe(404);
    expect((await scale('sc', { serviceName: 'sc', replicas: 1, namespace: 'dev' })).statusCode).toBe(404);
    const r = await scale('sc.openfaas-fn', { serviceName: 'sc', replicas: 0, namespace: 'openfaas-fn' });
    expect(r.statusCode).toBe(202);
    expect(r.json()).toMatchObject({ name: 'sc', replicas: 0 });
    expect(backend.fns.get('sc')!.version).toBe(1);
  });

  it('desiredReplicas: scale-function over the min label, capped by max; none without either', () => {
    expect(desiredReplicas({ labels: {}, annotations: {} })).toBeUndefined();
    expect(desiredReplicas({ labels: { 'com.openfaas.scale.min': '2' }, annotations: {} })).toBe(2);
    expect(desiredReplicas({ labels: {}, annotations: { 'com.openfaas.scale.min': '3' } })).toBe(3);
    expect(desiredReplicas({ labels: { 'com.openfaas.scale.min': '2' }, annotations: {}, replicas: 0 })).toBe(0);
    expect(desiredReplicas({ labels: { 'com.openfaas.scale.max': '2' }, annotations: {}, replicas: 5 })).toBe(2);
  });
});
