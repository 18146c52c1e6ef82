/**
 * The gateway's HTTP layer through app.inject(), against an in-memory backend
 * (the NATS backend has its own integration tests).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { AsyncCall, CallRecord, CallStatus, InvokeResult } from '../../contracts/bus.js';
import type { DeployRequest, FunctionRecord } from '../../contracts/functions.js';
import type { InvocationEvent } from '../../contracts/guest-protocol.js';
import { buildGateway } from '../../gateway/app.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import { FunctionStoreError } from '../../lib/function-store.js';
import { newRecord } from '../../lib/call-records.js';

type Responder = (fn: FunctionRecord, callId: string, event: InvocationEvent) => InvokeResult | Promise<InvokeResult>;

class MemoryBackend implements GatewayBackend {
  readonly fns = new Map<string, FunctionRecord>();
  readonly calls: { fn: FunctionRecord; callId: string; event: InvocationEvent }[] = [];
  isHealthy = true;
  respond: Responder = (_fn, callId, event) => ({
    callId,
    hostId: 'host-a',
    start: 'pool',
    durationMs: 3,
    logs: [{ stream: 'stdout', line: 'LOG LINE' }],
    outcome: { kind: 'value', value: { echo: event.body } },
  });

  private toRecord(req: DeployRequest, version: number, createdAt: string): FunctionRecord {
    return {
      name: req.service,
      runtime: req.runtime,
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
      version,
      createdAt,
      updatedAt: new Date().toISOString(),
    };
  }

  readonly secrets = new Map<string, string>();
  async createSecret(name: string, value: string): Promise<void> {
    this.secrets.set(name, value);
  }
  async updateSecret(name: string, value: string): Promise<void> {
    this.secrets.set(name, value);
  }
  async listSecrets() {
    return [...this.secrets.keys()].map((name) => ({ name, createdAt: '', updatedAt: '' }));
  }
  async deleteSecret(name: string): Promise<boolean> {
    return this.secrets.delete(name);
  }
  readonly records = new Map<string, CallRecord>();
  async submitAsync(_fn: FunctionRecord, call: AsyncCall): Promise<{ duplicate: boolean }> {
    if (this.records.has(call.callId)) return { duplicate: true };
    this.records.set(call.callId, newRecord(call));
    return { duplicate: false };
  }
  async getCall(callId: string): Promise<CallRecord | null> {
    return this.records.get(callId) ?? null;
  }
  async listCalls(filter: { function?: string; status?: CallStatus; limit: number }): Promise<CallRecord[]> {
    return [...this.records.values()]
      .filter((r) => (!filter.function || r.function === filter.function) && (!filter.status || r.status === filter.status))
      .slice(0, filter.limit);
  }
  async cancelCall(callId: string): Promise<{ cancelled: boolean; record: CallRecord | null }> {
    const r = this.records.get(callId);
    if (!r || r.status !== 'queued') return { cancelled: false, record: r ?? null };
    const next = { ...r, status: 'cancelled' as const };
    this.records.set(callId, next);
    return { cancelled: true, record: next };
  }

  async createFunction(req: DeployRequest): Promise<FunctionRecord> {
    if (this.fns.has(req.service)) {
      throw new FunctionStoreError('ALREADY_EXISTS', `function "${req.service}" already exists; update it with PUT`);
    }
    if (req.limits?.memory === '1Ti') throw new FunctionStoreError('INVALID', 'limits.memory must be between 64Mi and 2048Mi', 'limits.memory');
    const r = this.toRecord(req, 1, new Date().toISOString());
    this.fns.set(r.name, r);
    return r;
  }
  async updateFunction(req: DeployRequest): Promise<FunctionRecord> {
    const old = this.fns.get(req.service);
    if (!old) throw new FunctionStoreError('NOT_FOUND', `function "${req.service}" not found`);
    const r = this.toRecord(req, old.version + 1, old.createdAt);
    this.fns.set(r.name, r);
    return r;
  }
  async getFunction(name: string): Promise<FunctionRecord | null> {
    return this.fns.get(name) ?? null;
  }
  async listFunctions(): Promise<FunctionRecord[]> {
    return [...this.fns.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
  async deleteFunction(name: string): Promise<boolean> {
    return this.fns.delete(name);
  }
  async invoke(fn: FunctionRecord, callId: string, event: InvocationEvent): Promise<InvokeResult> {
    this.calls.push({ fn, callId, event });
    return this.respond(fn, callId, event);
  }
  healthy(): boolean {
    return this.isHealthy;
  }
}

const MAX_BODY = 4096;
const MAX_CODE = 2048;
let backend: MemoryBackend;
let app: FastifyInstance;

beforeEach(async () => {
  backend = new MemoryBackend();
  app = await buildGateway({
    backend,
    maxBodyBytes: MAX_BODY,
    maxCodeBytes: MAX_CODE,
    version: { release: '0.1.0', sha: 'abc123' },
    logger: false,
  });
});
afterEach(async () => {
  await app.close();
});

const deploy = (body: unknown, method: 'POST' | 'PUT' = 'POST') =>
  app.inject({ method, url: '/system/functions', payload: body as object });
const spec = (over: Record<string, unknown> = {}) => ({ service: 'echo', code: 'export const handler = (e) => e;', ...over });

function setValue(value: unknown, extra: Partial<InvokeResult> = {}): void {
  backend.respond = (_fn, callId) => ({ callId, durationMs: 1, logs: [], outcome: { kind: 'value', value }, ...extra });
}

describe('function CRUD', () => {
  it('deploy 202, duplicate 409 (use PUT), update 202, update unknown 404', async () => {
    const r1 = await deploy(spec({ labels: { team: 'a' } }));
    expect(r1.statusCode).toBe(202);
    expect(r1.json()).toMatchObject({ name: 'echo', version: 1, labels: { team: 'a' } });

    const r2 = await deploy(spec());
    expect(r2.statusCode).toBe(409);
    expect(r2.json()).toMatchObject({ code: 'FUNCTION_EXISTS' });
    expect(r2.json().error).toContain('PUT');

    const r3 = await deploy(spec({ isolation: 'per-function' }), 'PUT');
    expect(r3.statusCode).toBe(202);
    expect(r3.json()).toMatchObject({ name: 'echo', version: 2, isolation: 'per-function' });

    const r4 = await deploy(spec({ service: 'nope' }), 'PUT');
    expect(r4.statusCode).toBe(404);
    expect(r4.json()).toMatchObject({ code: 'FUNCTION_NOT_FOUND', error: 'function "nope" not found' });
  });

  it('lists entries with what faas-cli expects', async () => {
    await deploy(spec({ annotations: { a: 'b' } }));
    await app.inject({ method: 'POST', url: '/function/echo', payload: 'x' });
    await app.inject({ method: 'POST', url: '/function/echo', payload: 'y' });
    const r = await app.inject({ method: 'GET', url: '/system/functions' });
    expect(r.statusCode).toBe(200);
    const list = r.json();
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({
      name: 'echo',
      image: 'mayfly/node',
      invocationCount: 2,
      replicas: 1,
      availableReplicas: 1,
      labels: {},
      annotations: { a: 'b' },
      envProcess: '',
      runtime: 'node',
      isolation: 'per-request',
      memory: '128Mi',
      timeout: 30000,
      version: 1,
    });
    expect(typeof list[0].createdAt).toBe('string');
    expect(list[0]).not.toHaveProperty('envVars');
  });

  it('gets one; 404 for unknown; 400 for a bad name', async () => {
    await deploy(spec());
    const r = await app.inject({ method: 'GET', url: '/system/function/echo?namespace=openfaas-fn' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ name: 'echo', replicas: 1 });

    const r2 = await app.inject({ method: 'GET', url: '/system/function/ghost' });
    expect(r2.statusCode).toBe(404);
    expect(r2.json()).toEqual({ error: 'function "ghost" not found', code: 'FUNCTION_NOT_FOUND' });

    const r3 = await app.inject({ method: 'GET', url: '/system/function/Bad_Name' });
    expect(r3.statusCode).toBe(400);
    expect(r3.json()).toMatchObject({ code: 'INVALID_NAME', field: 'name' });
    expect(r3.json().error).toContain('lowercase');
  });

  it('deletes, then 404', async () => {
    await deploy(spec());
    const del = await app.inject({ method: 'DELETE', url: '/system/functions', payload: { functionName: 'echo' } });
    expect(del.statusCode).toBe(202);
    expect((await app.inject({ method: 'GET', url: '/system/function/echo' })).statusCode).toBe(404);
    const again = await app.inject({ method: 'DELETE', url: '/system/functions', payload: { functionName: 'echo' } });
    expect(again.statusCode).toBe(404);
    expect(again.json().code).toBe('FUNCTION_NOT_FOUND');
    const bad = await app.inject({ method: 'DELETE', url: '/system/functions', payload: { name: 'echo' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ code: 'INVALID_BODY' });
  });

  it('parses /system bodies as JSON whatever the Content-Type (curl -d, Go clients)', async () => {
    const r = await app.inject({ method: 'POST', url: '/system/functions', body: JSON.stringify(spec()) });
    expect(r.statusCode).toBe(202);
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const r2 = await app.inject({ method: 'PUT', url: '/system/functions', headers: form, body: JSON.stringify(spec()) });
    expect(r2.statusCode).toBe(202);
    const r3 = await app.inject({ method: 'PUT', url: '/system/functions', headers: form, body: 'service=echo' });
    expect(r3.statusCode).toBe(400);
    expect(r3.json().code).toBe('INVALID_JSON');
    expect(r3.json().error).toContain('application/json');
  });

  it('a malformed Content-Type header → 415', async () => {
    const r = await app.inject({ method: 'POST', url: '/system/functions', headers: { 'content-type': 'not a type' }, body: '{}' });
    expect(r.statusCode).toBe(415);
    expect(r.json().code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });
});

describe('bad deploy bodies → 400 naming the field', () => {
  it('malformed JSON', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/system/functions',
      headers: { 'content-type': 'application/json' },
      body: '{"service": "echo",',
    });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ code: 'INVALID_JSON' });
  });

  it('empty JSON body and no body at all', async () => {
    // An empty body is no body, whatever the Content-Type says: the route says what it needs.
    const r = await app.inject({ method: 'POST', url: '/system/functions', headers: { 'content-type': 'application/json' }, body: '' });
    expect(r.statusCode).toBe(400);
    expect(r.json().code).toBe('INVALID_BODY');
    expect(r.json().error).toMatch(/request body is missing/);
    const r2 = await app.inject({ method: 'POST', url: '/system/functions' });
    expect(r2.statusCode).toBe(400);
    expect(r2.json().code).toBe('INVALID_BODY');
  });

  const cases: [string, unknown, string, RegExp][] = [
    ['missing code', { service: 'echo' }, 'code', /code: is required/],
    ['bad name', spec({ service: 'Bad_Name' }), 'service', /service: must be 1 to 63 characters/],
    ['unknown field', spec({ memory: '128Mi' }), 'memory', /unknown field "memory"/],
    ['wrong type', spec({ code: 42 }), 'code', /code: must be a string, got number/],
    ['wrong union type', spec({ timeout: true }), 'timeout', /timeout: must be a string or a number, got boolean/],
    ['nested wrong type', spec({ envVars: { A: 1 } }), 'envVars.A', /envVars\.A: must be a string/],
    ['nested unknown field', spec({ limits: { gpu: 1 } }), 'limits.gpu', /limits: unknown field "gpu"/],
    ['bad env var name', spec({ envVars: { '': 'x' } }), 'envVars', /envVars: invalid name ""/],
    ['bad enum', spec({ isolation: 'shared' }), 'isolation', /isolation: must be one of "per-request", "per-function"/],
    ['bad runtime', spec({ runtime: 'python' }), 'runtime', /the only runtime is "node"/],
    ['not an object', [1, 2], '', /expected object|must be an object/],
  ];
  for (const [what, body, field, message] of cases) {
    it(what, async () => {
      const r = await deploy(body);
      expect(r.statusCode).toBe(400);
      const b = r.json();
      expect(b.code).toBe('INVALID_BODY');
      expect(b.error).toMatch(/^invalid request body: /);
      expect(b.error).toMatch(message);
      if (field) expect(b.field).toBe(field);
      else expect(b.field).toBeUndefined();
    });
  }

  it('FunctionStoreError INVALID keeps its field', async () => {
    const r = await deploy(spec({ limits: { memory: '1Ti' } }));
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ code: 'INVALID_BODY', field: 'limits.memory' });
  });

  it('code above maxCodeBytes → 400 on code; deploy body above maxCodeBytes + 64 KiB → 413', async () => {
    const r = await deploy(spec({ code: 'x'.repeat(MAX_CODE + 1) }));
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ code: 'INVALID_BODY', field: 'code' });
    const r2 = await deploy(spec({ code: 'x'.repeat(MAX_CODE + 70 * 1024) }));
    expect(r2.statusCode).toBe(413);
    expect(r2.json()).toMatchObject({ code: 'BODY_TOO_LARGE' });
    expect(r2.json().error).toContain('MAYFLY_MAX_CODE_BYTES');
  });
});

describe('invocation', () => {
  beforeEach(async () => {
    expect((await deploy(spec())).statusCode).toBe(202);
  });

  it('builds the event: path, query arrays, lower-cased headers, JSON body, X-Call-Id passthrough', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/function/echo/items/7?tag=a&tag=b&x=1',
      headers: { 'Content-Type': 'application/json', 'X-Custom-Thing': 'Yes', 'X-Call-Id': 'my-call.1' },
      payload: '{"n":1}',
    });
    expect(r.statusCode).toBe(200);
    expect(r.headers['x-call-id']).toBe('my-call.1');
    const call = backend.calls[0]!;
    expect(call.callId).toBe('my-call.1');
    expect(call.fn.name).toBe('echo');
    expect(call.event).toMatchObject({
      method: 'POST',
      path: '/items/7',
      query: { tag: ['a', 'b'], x: '1' },
      body: '{"n":1}',
      isBase64Encoded: false,
    });
    expect(call.event.headers).toMatchObject({ 'content-type': 'application/json', 'x-custom-thing': 'Yes', 'x-call-id': 'my-call.1' });
  });

  it('path "/" when none; GET has an empty body', async () => {
    await app.inject({ method: 'GET', url: '/function/echo?q=1' });
    expect(backend.calls[0]!.event).toMatchObject({ method: 'GET', path: '/', query: { q: '1' }, body: '', isBase64Encoded: false });
  });

  it('binary bodies are base64; text types are strings', async () => {
    const bytes = Buffer.from([0, 255, 1, 254]);
    await app.inject({ method: 'PUT', url: '/function/echo/up', headers: { 'content-type': 'application/octet-stream' }, payload: bytes });
    expect(backend.calls[0]!.event).toMatchObject({ body: bytes.toString('base64'), isBase64Encoded: true });
    await app.inject({ method: 'POST', url: '/function/echo', headers: { 'content-type': 'text/csv' }, payload: 'a,b\n1,2' });
    expect(backend.calls[1]!.event).toMatchObject({ body: 'a,b\n1,2', isBase64Encoded: false });
    await app.inject({ method: 'POST', url: '/function/echo', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=1&b=2' });
    expect(backend.calls[2]!.event).toMatchObject({ body: 'a=1&b=2', isBase64Encoded: false });
  });

  it('generates a call id when none or an invalid one is sent', async () => {
    const r = await app.inject({ method: 'GET', url: '/function/echo', headers: { 'x-call-id': 'bad id with spaces' } });
    const id = r.headers['x-call-id'];
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(backend.calls[0]!.callId).toBe(id);
  });

  it('platform headers on success', async () => {
    const r = await app.inject({ method: 'POST', url: '/function/echo', payload: 'hi' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ echo: 'hi' });
    expect(r.headers['x-duration-seconds']).toMatch(/^\d+\.\d{3}$/);
    expect(r.headers['x-mayfly-start']).toBe('pool');
    expect(r.headers['x-mayfly-host']).toBe('host-a');
    expect(r.body).not.toContain('LOG LINE');
  });

  it('X-Mayfly-Start / X-Mayfly-Host omitted when absent', async () => {
    setValue('v');
    const r = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(r.headers['x-call-id']).toBeDefined();
    expect(r.headers['x-mayfly-start']).toBeUndefined();
    expect(r.headers['x-mayfly-host']).toBeUndefined();
  });

  it('maps a response object: status, headers, string body', async () => {
    setValue({ statusCode: 201, headers: { 'Content-Type': 'text/html', 'X-Thing': 'ok', 'Transfer-Encoding': 'chunked' }, body: '<b>made</b>' }, { start: 'warm' });
    const r = await app.inject({ method: 'POST', url: '/function/echo' });
    expect(r.statusCode).toBe(201);
    expect(r.headers['content-type']).toBe('text/html');
    expect(r.headers['x-thing']).toBe('ok');
    expect(r.headers['transfer-encoding']).toBeUndefined();
    expect(r.headers['x-mayfly-start']).toBe('warm');
    expect(r.body).toBe('<b>made</b>');
    // An HTML answer runs sandboxed (functions share the console's origin); never sniffed.
    expect(r.headers['content-security-policy']).toMatch(/^sandbox /);
    expect(r.headers['content-security-policy']).not.toMatch(/allow-same-origin/);
    expect(r.headers['x-content-type-options']).toBe('nosniff');
  });

  it('keeps a function\'s own CSP and adds the sandbox to it; leaves JSON answers unsandboxed', async () => {
    setValue({ statusCode: 200, headers: { 'content-type': 'image/svg+xml', 'content-security-policy': "default-src 'self'" }, body: '<svg/>' });
    const svg = await app.inject({ method: 'GET', url: '/function/echo' });
    const csp = ([] as string[]).concat(svg.headers['content-security-policy'] as string | string[]);
    expect(csp).toEqual(["default-src 'self'", expect.stringMatching(/^sandbox /)]);
    setValue({ statusCode: 200, body: { ok: true } });
    const json = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(json.headers['content-security-policy']).toBeUndefined();
    expect(json.headers['x-content-type-options']).toBe('nosniff');
  });

  it('maps an object body to JSON, a base64 body to bytes', async () => {
    setValue({ statusCode: 200, body: { a: [1] } });
    const r = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.json()).toEqual({ a: [1] });

    const bytes = Buffer.from([1, 2, 3, 200]);
    setValue({ statusCode: 200, headers: { 'content-type': 'image/png' }, body: bytes.toString('base64'), isBase64Encoded: true });
    const r2 = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(r2.headers['content-type']).toBe('image/png');
    expect(r2.rawPayload.equals(bytes)).toBe(true);
  });

  it('plain value → 200 JSON, string too; undefined → 204', async () => {
    setValue('hello');
    const r = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.body).toBe('"hello"');

    setValue(undefined);
    const r2 = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(r2.statusCode).toBe(204);
    expect(r2.body).toBe('');
    expect(r2.headers['content-type']).toBeUndefined();
    expect(r2.headers['x-call-id']).toBeDefined();
  });

  it('handler error → 500 with callId', async () => {
    backend.respond = (_fn, callId) => ({
      callId,
      durationMs: 1,
      logs: [],
      outcome: { kind: 'error', error: { name: 'Error', message: 'boom' } },
    });
    const r = await app.inject({ method: 'GET', url: '/function/echo', headers: { 'x-call-id': 'c42' } });
    expect(r.statusCode).toBe(500);
    expect(r.json()).toEqual({ error: 'boom', code: 'FUNCTION_ERROR', name: 'Error', callId: 'c42' });
    expect(r.headers['x-call-id']).toBe('c42');
  });

  it('platform failures → their status with code and callId', async () => {
    const table = [
      ['FUNCTION_TIMEOUT', 504],
      ['NO_CAPACITY', 503],
      ['NO_SCHEDULER', 503],
      ['CODE_UNAVAILABLE', 503],
      ['INIT_FAILED', 500],
      ['GUEST_FAULT', 502],
      ['VM_FAILED', 502],
      ['INTERNAL', 500],
      ['HOST_LOST', 502],
    ] as const;
    for (const [code, status] of table) {
      backend.respond = (_fn, callId) => ({ callId, durationMs: 1, logs: [], outcome: { kind: 'platform', code, message: `m ${code}` } });
      const r = await app.inject({ method: 'POST', url: '/function/echo' });
      expect(r.statusCode, code).toBe(status);
      expect(r.json()).toEqual({ error: `m ${code}`, code, callId: r.headers['x-call-id'] });
      expect(r.headers['x-duration-seconds']).toBeDefined();
    }
  });

  it('a rejecting backend → 500 INTERNAL with callId', async () => {
    backend.respond = () => {
      throw new Error('nats exploded');
    };
    const r = await app.inject({ method: 'GET', url: '/function/echo' });
    expect(r.statusCode).toBe(500);
    expect(r.json()).toMatchObject({ code: 'INTERNAL', callId: r.headers['x-call-id'] });
    expect(r.body).not.toContain('nats exploded');
  });

  it('body over maxBodyBytes → 413 (with X-Call-Id), nothing invoked', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/function/echo',
      headers: { 'content-type': 'application/octet-stream' },
      payload: Buffer.alloc(MAX_BODY + 1),
    });
    expect(r.statusCode).toBe(413);
    expect(r.json()).toMatchObject({ code: 'BODY_TOO_LARGE' });
    expect(r.json().error).toContain('MAYFLY_MAX_BODY_BYTES');
    expect(r.headers['x-call-id']).toBeDefined();
    expect(backend.calls).toHaveLength(0);
    const ok = await app.inject({ method: 'POST', url: '/function/echo', payload: Buffer.alloc(MAX_BODY) });
    expect(ok.statusCode).toBe(200);
  });

  it('unknown function → 404 before anything runs; bad name → 400', async () => {
    const r = await app.inject({ method: 'POST', url: '/function/ghost/x', payload: Buffer.alloc(MAX_BODY + 10) });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toMatchObject({ code: 'FUNCTION_NOT_FOUND' });
    expect(r.headers['x-call-id']).toBeUndefined();
    const r2 = await app.inject({ method: 'GET', url: '/function/Bad_Name' });
    expect(r2.statusCode).toBe(400);
    expect(r2.json()).toMatchObject({ code: 'INVALID_NAME' });
    const r3 = await app.inject({ method: 'GET', url: `/function/${'a'.repeat(200)}` });
    expect(r3.statusCode).toBe(400);
    expect(backend.calls).toHaveLength(0);
  });

  it('a path longer than an event may carry → 414', async () => {
    const r = await app.inject({ method: 'GET', url: `/function/echo/${'p'.repeat(5000)}` });
    expect(r.statusCode).toBe(414);
    expect(r.json().code).toBe('PATH_TOO_LONG');
    expect(backend.calls).toHaveLength(0);
  });

  it('tolerates an empty bearer token (faas-cli)', async () => {
    const headers = { authorization: 'Bearer ' };
    expect((await app.inject({ method: 'GET', url: '/function/echo', headers })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/system/functions', headers })).statusCode).toBe(200);
    expect((await app.inject({ method: 'PUT', url: '/system/functions', headers, payload: spec() })).statusCode).toBe(202);
  });
});

describe('system routes', () => {
  it('/healthz follows backend.healthy()', async () => {
    const r = await app.inject({ method: 'GET', url: '/healthz' });
    expect(r.statusCode).toBe(200);
    expect(r.body).toBe('OK');
    expect((await app.inject({ method: 'HEAD', url: '/healthz' })).statusCode).toBe(200);
    backend.isHealthy = false;
    const r2 = await app.inject({ method: 'GET', url: '/healthz' });
    expect(r2.statusCode).toBe(503);
    expect(r2.json().code).toBe('UNAVAILABLE');
  });

  it('/system/info has the shape faas-cli reads', async () => {
    const r = await app.inject({ method: 'GET', url: '/system/info' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({
      provider: { provider: 'mayfly', orchestration: 'vm', version: { release: '0.1.0', sha: 'abc123' } },
      version: { release: '0.1.0', sha: 'abc123', commit_message: '' },
      arch: process.arch === 'x64' ? 'x86_64' : expect.any(String),
    });
  });

  it('/metrics has the four gateway_* metrics after an invocation, and process metrics', async () => {
    await deploy(spec());
    await deploy(spec({ service: 'other' }));
    await app.inject({ method: 'GET', url: '/function/echo' });
    const r = await app.inject({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    const text = r.body;
    expect(text).toContain('gateway_function_invocation_total{function_name="echo",code="200"} 1');
    expect(text).toContain('gateway_functions_seconds_bucket{le="+Inf",function_name="echo",code="200"} 1');
    expect(text).toContain('gateway_service_count{function_name="echo"} 1');
    expect(text).toContain('gateway_service_count{function_name="other"} 1');
    expect(text).toContain('gateway_function_invocation_started{function_name="echo"} 1');
    expect(text).toContain('process_cpu_user_seconds_total');

    await app.inject({ method: 'DELETE', url: '/system/functions', payload: { functionName: 'other' } });
    const r2 = await app.inject({ method: 'GET', url: '/metrics' });
    expect(r2.body).not.toContain('gateway_service_count{function_name="other"}');
  });

  it('several gateways in one process keep separate registries', async () => {
    const other = await buildGateway({ backend, maxBodyBytes: MAX_BODY, maxCodeBytes: MAX_CODE, version: { release: 'x', sha: 'y' } });
    await deploy(spec());
    await app.inject({ method: 'GET', url: '/function/echo' });
    const r = await other.inject({ method: 'GET', url: '/metrics' });
    expect(r.body).not.toContain('gateway_function_invocation_total{');
    await other.close();
  });

  it('unknown route → 404 NOT_FOUND JSON', async () => {
    const r = await app.inject({ method: 'GET', url: '/nope?x=1' });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toEqual({ error: 'no route for GET /nope', code: 'NOT_FOUND' });
    const r2 = await app.inject({ method: 'PATCH', url: '/system/functions', payload: {} });
    expect(r2.statusCode).toBe(404);
    expect(r2.json().code).toBe('NOT_FOUND');
  });

  it('unexpected exceptions → 500 INTERNAL without internals', async () => {
    backend.listFunctions = async () => {
      throw new Error('kv bucket on fire');
    };
    const r = await app.inject({ method: 'GET', url: '/system/functions' });
    expect(r.statusCode).toBe(500);
    expect(r.json()).toMatchObject({ error: 'internal error', code: 'INTERNAL' });
    expect(r.body).not.toContain('fire');
    // /metrics still answers when the backend cannot list
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
  });
});
