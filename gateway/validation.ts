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

const DEPLOY_FIELDS = Object.keys(deployRequestSchema.shape);
const DELETE_FIELDS = Object.keys(deleteRequestSchema.shape);

/** A function name from the URL; 400 INVALID_NAME with the rule otherwise. */
export function parseFunctionName(raw: unknown): string {
  const r = functionNameSchema.safeParse(raw);
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
  const r = deployRequestSchema.safeParse(body);
  if (!r.success) {
    throw zodToGatewayError(r.error, body, { code: 'INVALID_BODY', what: 'invalid request body', allowedRootFields: DEPLOY_FIELDS });
  }
  if (r.data.code === undefined && r.data.package === undefined) {
    throw new GatewayError(
      400,
      'INVALID_BODY',
      'invalid request body: code: is required (a string: the function\'s source), or send "package": a base64 .tar.gz/.zip with package.json (Mayfly runs code, not container images)',
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
  return r.data;
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
  const r = deleteRequestSchema.safeParse(body);
  if (!r.success) {
    throw zodToGatewayError(r.error, body, { code: 'INVALID_BODY', what: 'invalid request body', allowedRootFields: DELETE_FIELDS });
  }
  return r.data.functionName;
}
