/**
 * The function CRUD of the OpenFaaS provider API:
 *   GET    /system/functions         list (what `faas-cli list` reads)
 *   GET    /system/function/:name    one (what `faas-cli describe` reads)
 *   POST   /system/functions         deploy → 202 with the function's status entry
 *   PUT    /system/functions         update → 202 with the function's status entry
 *   DELETE /system/functions         {"functionName": "..."} → 202, empty body
 */
import type { FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import type { DeployBody, DeployRequest, FunctionRecord } from '../../contracts/functions.js';
import type { GatewayDeps } from '../deps.js';
import { desiredReplicas } from '../../contracts/scale.js';
import { GatewayError } from '../errors.js';
import { checkNamespace, NAMESPACES } from '../namespaces.js';
import { parseDeleteBody, parseDeployBody, parseFunctionName } from '../validation.js';
import { scheduleStatus } from './triggers.js';

/**
 * One entry of GET /system/functions: OpenFaaS's FunctionStatus plus Mayfly's fields.
 * envVars are deliberately not listed (they may hold secrets).
 */
export interface FunctionStatus {
  name: string;
  image: string;
  /** Finished invocations counted by this gateway process (not cluster-wide). */
  invocationCount: number;
  /**
   * Ready VMs the function asks for (com.openfaas.scale.min or scale-function,
   * contracts/scale.ts) and those ready now across hosts; 1 and 1 for a function
   * with neither (it scales from zero on any host, so it is always available).
   */
  replicas: number;
  availableReplicas: number;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  createdAt: string;
  updatedAt: string;
  /** OpenFaaS's fprocess: what an image function runs ('' for code functions). */
  envProcess: string;
  limits: { memory: string };
  runtime: string;
  handler: string;
  isolation: string;
  /** e.g. "128Mi". */
  memory: string;
  /** Milliseconds. */
  timeout: number;
  version: number;
  /** sha256 of the stored code (or bundle): tells a client whether a deploy changed it. */
  codeHash: string;
  /** Functions with a `schedule` annotation: its expression and next fire times (UTC). */
  schedule?: { expression: string; catchUp: boolean; nextRuns: string[] };
}

export function toFunctionStatus(fn: FunctionRecord, invocationCount: number, readyNow?: number): FunctionStatus {
  const memory = `${fn.memoryMiB}Mi`;
  const desired = desiredReplicas(fn);
  return {
    name: fn.name,
    image: fn.image,
    invocationCount,
    replicas: desired ?? 1,
    availableReplicas: desired === undefined ? 1 : (readyNow ?? 0),
    labels: fn.labels,
    annotations: fn.annotations,
    createdAt: fn.createdAt,
    updatedAt: fn.updatedAt,
    envProcess: fn.envProcess ?? '',
    limits: { memory },
    runtime: fn.runtime,
    handler: fn.handler,
    isolation: fn.isolation,
    memory,
    timeout: fn.timeoutMs,
    version: fn.version,
    codeHash: fn.codeHash,
    ...scheduleField(fn),
  };
}

/** Ready VMs of this function version across hosts, from their heartbeats. */
export function readyReplicas(deps: GatewayDeps, fn: Pick<FunctionRecord, 'name' | 'version'>): number {
  const key = `${fn.name}@${fn.version}`;
  return (deps.hosts?.list() ?? []).reduce((n, h) => n + (h.ready?.[key] ?? 0), 0);
}

function scheduleField(fn: FunctionRecord): Pick<FunctionStatus, 'schedule'> {
  const schedule = scheduleStatus(fn);
  return schedule ? { schedule } : {};
}

export function listFunctions(deps: GatewayDeps): RouteHandlerMethod {
  return async (_request: FastifyRequest, reply: FastifyReply) => {
    const fns = await deps.backend.listFunctions();
    deps.metrics.setServices(fns.map((f) => f.name));
    return reply.send(fns.map((f) => toFunctionStatus(f, deps.metrics.invocationCount(f.name), readyReplicas(deps, f))));
  };
}

/** GET /system/namespaces: what `faas-cli namespaces` reads (a JSON array of names). */
export function listNamespaces(): RouteHandlerMethod {
  return async (_request: FastifyRequest, reply: FastifyReply) => reply.send([...NAMESPACES]);
}

export function getFunction(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const ns = (request.query as { namespace?: unknown } | undefined)?.namespace;
    if (typeof ns === 'string') checkNamespace(ns);
    const name = parseFunctionName((request.params as { name?: unknown }).name);
    const fn = await deps.backend.getFunction(name);
    if (!fn) throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${name}" not found`);
    return reply.send(toFunctionStatus(fn, deps.metrics.invocationCount(name), readyReplicas(deps, fn)));
  };
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A PackageError of functions/package/ (duck-typed: the gateway does not import the builder). */
function isPackageError(err: unknown): err is Error & { status: number; code: string; file?: string } {
  return err instanceof Error && err.name === 'PackageError' && typeof (err as { status?: unknown }).status === 'number';
}

/**
 * The request to store: `code` as sent, or the bundle built from `package`
 * (nothing is stored when the build fails: the previous version keeps serving).
 */
async function toDeployRequest(deps: GatewayDeps, body: DeployBody): Promise<{ req: DeployRequest; build?: Record<string, unknown> }> {
  const { code, package: pkg, ...spec } = body;
  if (code !== undefined) return { req: { ...spec, code } };
  if (pkg === undefined && spec.image !== undefined) return imageDeployRequest(deps, spec);
  if (!deps.packages) throw new GatewayError(501, 'NOT_CONFIGURED', 'function packages are not enabled on this gateway; deploy "code" (one file) instead');
  const b64 = (pkg ?? '').replace(/\s+/g, '');
  if (!BASE64.test(b64)) {
    throw new GatewayError(400, 'INVALID_BODY', 'invalid request body: package: must be the archive (.tar.gz or .zip) encoded as base64', { field: 'package' });
  }
  try {
    const built = await deps.packages.build(Buffer.from(b64, 'base64'), spec.handler);
    return { req: { ...spec, code: built.code }, build: built.report };
  } catch (err) {
    if (isPackageError(err)) {
      throw new GatewayError(err.status, err.code, `function package: ${err.message}`, err.file !== undefined ? { file: err.file } : {});
    }
    throw err;
  }
}

/** An ImageError of functions/oci/ (duck-typed like package errors). */
function isImageError(err: unknown): err is Error & { status: number; code: string } {
  return err instanceof Error && err.name === 'ImageError' && typeof (err as { status?: unknown }).status === 'number';
}

/** An image deploy: pull it (nothing is stored unless the whole pull succeeds); the watchdog spec becomes the code. */
async function imageDeployRequest(deps: GatewayDeps, spec: Omit<DeployBody, 'code' | 'package'>): Promise<{ req: DeployRequest; build?: Record<string, unknown> }> {
  if (!deps.images) throw new GatewayError(501, 'NOT_CONFIGURED', 'image deploys are not enabled on this gateway; deploy "code" or "package" instead');
  try {
    const pulled = await deps.images.pull(spec.image!, spec.envProcess);
    return {
      req: { ...spec, code: pulled.code, envProcess: pulled.envProcess, rootfs: pulled.rootfs },
      build: { image: pulled.report },
    };
  } catch (err) {
    if (isImageError(err)) throw new GatewayError(err.status, err.code, `image ${JSON.stringify(spec.image)}: ${err.message}`, { field: 'image' });
    throw err;
  }
}

export function deployFunction(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const body = parseDeployBody(request.body, deps.maxCodeBytes);
    if ((body.package !== undefined || (body.code === undefined && body.image !== undefined)) && (await deps.backend.getFunction(body.service))) {
      throw new GatewayError(409, 'FUNCTION_EXISTS', `function "${body.service}" already exists; update it with PUT /system/functions`);
    }
    const { req, build } = await toDeployRequest(deps, body);
    const fn = await deps.backend.createFunction(req);
    request.log.info({ function: fn.name, version: fn.version, ...(build ? { build } : {}) }, 'function deployed');
    return reply.code(202).send({ ...toFunctionStatus(fn, deps.metrics.invocationCount(fn.name)), ...(build ? { build } : {}) });
  };
}

export function updateFunction(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const body = parseDeployBody(request.body, deps.maxCodeBytes);
    if ((body.package !== undefined || (body.code === undefined && body.image !== undefined)) && !(await deps.backend.getFunction(body.service))) {
      throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${body.service}" not found`);
    }
    const { req, build } = await toDeployRequest(deps, body);
    const fn = await deps.backend.updateFunction(req);
    request.log.info({ function: fn.name, version: fn.version, ...(build ? { build } : {}) }, 'function updated');
    return reply.code(202).send({ ...toFunctionStatus(fn, deps.metrics.invocationCount(fn.name)), ...(build ? { build } : {}) });
  };
}

export function deleteFunction(deps: GatewayDeps): RouteHandlerMethod {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const name = parseDeleteBody(request.body);
    if (!(await deps.backend.deleteFunction(name))) {
      throw new GatewayError(404, 'FUNCTION_NOT_FOUND', `function "${name}" not found`);
    }
    deps.metrics.functionDeleted(name);
    request.log.info({ function: name }, 'function deleted');
    return reply.code(202).send();
  };
}
