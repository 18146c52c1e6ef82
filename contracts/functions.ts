/**
 * Functions as users deploy them (the HTTP API's bodies) and as Mayfly stores
 * them (the record in the NATS KV bucket). Limits are explicit here.
 */
import { z } from 'zod';

export const FUNCTION_NAME_PATTERN = /^[a-z0-9-]{1,63}$/;
export const functionNameSchema = z
  .string()
  .regex(FUNCTION_NAME_PATTERN, 'must be 1 to 63 characters of lowercase a-z, 0-9 and "-"');

export const isolationSchema = z.enum(['per-request', 'per-function']);
export type Isolation = z.infer<typeof isolationSchema>;

/** "128Mi", "128M", "1Gi", "512m" (OpenFaaS/Kubernetes style) or a number of MiB. */
export function parseMemoryMiB(v: string | number): number | null {
  if (typeof v === 'number') return Number.isInteger(v) && v > 0 ? v : null;
  const m = /^(\d+)\s*(Mi|M|m|Gi|G|g)?$/.exec(v.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const unit = m[2] ?? 'Mi';
  return unit.toLowerCase().startsWith('g') ? n * 1024 : n;
}

/** A number of seconds (Lambda style) or a duration "30s", "1500ms", "2m" (OpenFaaS style). */
export function parseTimeoutMs(v: string | number): number | null {
  if (typeof v === 'number') return v > 0 ? Math.round(v * 1000) : null;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(v.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const ms = m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
  return ms > 0 ? Math.round(ms) : null;
}

/** "handler", "index.handler", "src/index.handler" (Lambda style: the file without extension, then the export). */
export const HANDLER_PATTERN = /^(?:[\w@-][\w@.-]*(?:\/[\w@-][\w@.-]*)*\.)?[A-Za-z_$][\w$]*$/;

const stringMap = (maxEntries: number, maxValue: number) =>
  z
    .record(z.string().min(1).max(256), z.string().max(maxValue))
    .refine((r) => Object.keys(r).length <= maxEntries, `at most ${maxEntries} entries`);

/** Body of POST/PUT /system/functions. Unknown fields are rejected so typos do not pass silently. */
export const deployRequestSchema = z.strictObject({
  service: functionNameSchema,
  runtime: z.literal('node', { error: 'the only runtime is "node"' }).default('node'),
  /** The function's source (one file). Either this or `package`. */
  code: z.string().min(1, 'must not be empty').optional(),
  /**
   * A function package, base64: a .tar.gz or .zip with the handler and a
   * package.json with its lockfile (functions/package/). Either this or `code`.
   */
  package: z.string().min(1, 'must not be empty').optional(),
  handler: z
    .string()
    .regex(HANDLER_PATTERN, 'must be an export name like "handler", or "<file>.<export>" like "index.handler" or "src/index.handler"')
    .default('handler'),
  /**
   * A container image (OCI/Docker registry) to run instead of `code`: pulled at
   * deploy, its root filesystem booted in the VM, the function run the way
   * OpenFaaS's watchdogs do (functions/oci/, functions/agent/watchdog.ts).
   * With `code` or `package` it is only a label, as before.
   */
  image: z.string().max(512).optional(),
  /** OpenFaaS's fprocess for an image function (faas-cli --fprocess): overrides the image's. */
  envProcess: z.string().max(4096).optional(),
  /** OpenFaaS namespace; Mayfly has one, `openfaas-fn` (the default). */
  namespace: z.string().max(63).optional(),
  /** Sent by faas-cli; accepted and ignored (placement is Mayfly's scheduler's). */
  constraints: z.array(z.string().max(1024)).max(64).optional(),
  requests: z.strictObject({ memory: z.union([z.string(), z.number()]).optional(), cpu: z.string().max(64).optional() }).optional(),
  readOnlyRootFilesystem: z.boolean().optional(),
  envVars: stringMap(256, 32 * 1024)
    .refine((r) => Object.keys(r).every((k) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k)), 'names must be valid environment variable names')
    .optional(),
  limits: z.strictObject({ memory: z.union([z.string(), z.number()]).optional(), cpu: z.string().max(64).optional() }).optional(),
  timeout: z.union([z.string(), z.number()]).optional(),
  isolation: isolationSchema.default('per-request'),
  labels: stringMap(64, 1024).optional(),
  annotations: stringMap(64, 16 * 1024).optional(),
  /** Names of secrets (POST /system/secrets) the function may read at /var/openfaas/secrets/<name>. */
  secrets: z.array(z.string().min(1).max(63)).max(64).optional(),
});
/** The deploy body as sent: `code` or `package`. */
export type DeployBody = z.infer<typeof deployRequestSchema>;
/** A deploy ready to store: the code is the source itself or the bundle built from the package. */
export type DeployRequest = Omit<DeployBody, 'code' | 'package'> & {
  code: string;
  /** An image function: its pulled root filesystem (stored in the object store by FunctionStore). */
  rootfs?: ImageRootfs & { data: Uint8Array };
};

/** The root filesystem of an image function: a gzip'd cpio under rootfs/, in the object store as `object`. */
export const imageRootfsSchema = z.object({
  /** registry/repository:tag@sha256:… pulled. */
  reference: z.string(),
  digest: z.string(),
  /** Object store name: `rootfs-<sha256 of the cpio.gz>`. */
  object: z.string(),
  sha256: z.string(),
  bytes: z.number().int().nonnegative(),
  unpackedBytes: z.number().int().nonnegative(),
});
export type ImageRootfs = z.infer<typeof imageRootfsSchema>;

export const deleteRequestSchema = z.strictObject({ functionName: functionNameSchema, namespace: z.string().max(63).optional() });

/** What is stored per function (KV bucket, key = name). Code lives in the object store under `codeHash`. */
export const functionRecordSchema = z.object({
  name: functionNameSchema,
  runtime: z.literal('node'),
  handler: z.string(),
  codeHash: z.string(),
  codeBytes: z.number().int(),
  envVars: z.record(z.string(), z.string()),
  memoryMiB: z.number().int().positive(),
  timeoutMs: z.number().int().positive(),
  isolation: isolationSchema,
  image: z.string(),
  labels: z.record(z.string(), z.string()),
  annotations: z.record(z.string(), z.string()),
  secrets: z.array(z.string()).default([]),
  /** Image functions only: the root filesystem the VM boots with (code then holds the watchdog spec). */
  rootfs: imageRootfsSchema.optional(),
  /** Image functions: the process the watchdog runs (OpenFaaS's envProcess), as deployed or from the image. */
  envProcess: z.string().optional(),
  /** Ready VMs asked for by POST /system/scale-function (contracts/scale.ts); absent: the scale labels decide. */
  replicas: z.number().int().nonnegative().optional(),
  /** Increases on every update: warm VMs are never reused across versions. */
  version: z.number().int().positive(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type FunctionRecord = z.infer<typeof functionRecordSchema>;

/**
 * Function snapshots, on by default (annotation `com.mayfly.snapshot: "false"`
 * turns them off): after the function's first start, the worker snapshots a VM
 * with the function already loaded and starts later VMs of this version from it
 * (no module load on the call path), and its clones take the version's calls in
 * one bus hop. Like Lambda SnapStart, state computed at module load is the same
 * in every VM started from the snapshot (random sources are re-keyed per VM;
 * values drawn at load time are not). Never used for functions with secrets:
 * the snapshot's RAM file would hold them decrypted on the host, and a module
 * may read them at load time, so they cannot be delivered after the restore.
 */
export const SNAPSHOT_ANNOTATION = 'com.mayfly.snapshot';

export function usesSnapshot(fn: Pick<FunctionRecord, 'annotations' | 'secrets'>): boolean {
  return fn.annotations[SNAPSHOT_ANNOTATION] !== 'false' && fn.secrets.length === 0;
}
