/**
 * Request validation with the zod schemas of contracts/functions.ts; every failure
 * is a GatewayError (400) naming the field.
 */
import {
  deleteRequestSchema,
  deployRequestSchema,
  functionNameSchema,
  type DeployBody,
} from '../contracts/functions.js';
import { checkTriggerAnnotations, TriggerAnnotationError } from '../lib/trigger-annotations.js';
import { GatewayError, zodToGatewayError } from './errors.js';
import { checkNamespace, stripNamespace } from './namespaces.js';
import { ScaleLabelError, scaleLimits } from '../contracts/scale.js';

const DEPLOY_FIELDS = Object.keys(deployRequestSchema.shape);
const DELETE_FIELDS = Object.keys(deleteRequestSchema.shape);

/** A function name from the URL; 400 INVALID_NAME with the rule otherwise. */
export function parseFunctionName(raw: unknown): string {
  // OpenFaaS clients may add the namespace: `name.openfaas-fn` (gateway/namespaces.ts).
  const r = functionNameSchema.safeParse(typeof raw === 'string' ? stripNamespace(raw) : raw);
  if (r.success) return r.data;
  const rule = r.error.issues[0]?.message ?? 'invalid';
  return invalidName(raw, rule);
}

function invalidName(raw: unknown, rule: string): never {
  throw new GatewayError(400, 'INVALID_NAME', `invalid function name ${JSON.stringify(String(raw))}: ${rule}`, {
    field: 'name',
  });
}

function requireBody(body: unknown, what: string): void {
  if (body === undefined) {
    throw new GatewayError(400, 'INVALID_BODY', `request body is missing; send ${what} as JSON with Content-Type: application/json`);
  }
}

/** Body of POST/PUT /system/functions: exactly one of `code` and `package` (the package is built by the handler). */
export function parseDeployBody(body: unknown, maxCodeBytes: number): DeployBody {
  requireBody(body, 'the function spec');
  const r = deployRequestSchema.safeParse(withoutNamespace(body));
  if (!r.success) {
    throw zodToGatewayError(r.error, body, { code: 'INVALID_BODY', what: 'invalid request body', allowedRootFields: DEPLOY_FIELDS });
  }
  if (r.data.code === undefined && r.data.package === undefined && r.data.image === undefined) {
    throw new GatewayError(
      400,
      'INVALID_BODY',
      'invalid request body: code: is required (a string: the function\'s source), or send "package": a base64 .tar.gz/.zip with package.json, or "image": a container image reference',
      { field: 'code' },
    );
  }
  if (r.data.code !== undefined && r.data.package !== undefined) {
    throw new GatewayError(400, 'INVALID_BODY', 'invalid request body: send either "code" or "package", not both', { field: 'package' });
  }
  const bytes = r.data.code !== undefined ? Buffer.byteLength(r.data.code) : 0;
  if (bytes > maxCodeBytes) {
    throw new GatewayError(
      400,
      'INVALID_BODY',
      `invalid request body: code: is ${bytes} bytes, above the limit of ${maxCodeBytes} bytes (MAYFLY_MAX_CODE_BYTES)`,
      { field: 'code' },
    );
  }
  checkTriggers(r.data.annotations ?? {});
  try {
    scaleLimits(r.data);
  } catch (err) {
    if (!(err instanceof ScaleLabelError)) throw err;
    throw new GatewayError(400, 'INVALID_LABEL', err.message, { field: `labels.${err.label}` });
  }
  return r.data;
}

/** A body's `service` (or `functionName`) may carry `.openfaas-fn`, and `namespace` may name it: both mean the one namespace. */
function withoutNamespace(body: unknown, field: 'service' | 'functionName' = 'service'): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const b = body as Record<string, unknown>;
  if (typeof b.namespace === 'string') checkNamespace(b.namespace);
  for (const k of ['labels', 'annotations', 'envVars', 'secrets', 'constraints', 'limits', 'requests']) {
    // Go clients marshal a nil map or slice behind a pointer as null: the same as leaving it out.
    if (b[k] === null) return withoutNamespace(Object.fromEntries(Object.entries(b).filter(([key]) => key !== k)), field);
  }
  const v = b[field];
  return typeof v === 'string' && v.includes('.') ? { ...b, [field]: stripNamespace(v) } : body;
}

/** The trigger annotations (topic, schedule, ...): 400 INVALID_ANNOTATION naming the annotation. */
function checkTriggers(annotations: Record<string, string>): void {
  try {
    checkTriggerAnnotations(annotations);
  } catch (err) {
    if (!(err instanceof TriggerAnnotationError)) throw err;
    throw new GatewayError(400, 'INVALID_ANNOTATION', err.message, { field: `annotations.${err.annotation}` });
  }
}

/** Body of DELETE /system/functions: `{ "functionName": "..." }`. */
export function parseDeleteBody(body: unknown): string {
  requireBody(body, '{"functionName": "<name>"}');
  const r = deleteRequestSchema.safeParse(withoutNamespace(body, 'functionName'));
  if (!r.success) {
    throw zodToGatewayError(r.error, body, { code: 'INVALID_BODY', what: 'invalid request body', allowedRootFields: DELETE_FIELDS });
  }
  return r.data.functionName;
}
