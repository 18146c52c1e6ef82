/**
 * The stack file, `mayfly.yml`, shaped like faas-cli's `stack.yml`:
 *
 *   version: 1.0
 *   provider:
 *     name: mayfly            # faas-cli's "openfaas" is accepted too
 *     gateway: http://127.0.0.1:8080
 *   functions:
 *     hello:
 *       lang: node            # or typescript
 *       handler: ./hello      # a file or a folder (package with package.json)
 *     stronghash:             # or an OpenFaaS container image (README "OpenFaaS images")
 *       image: functions/alpine:latest
 *       fprocess: sha512sum   # optional: the image's own fprocess otherwise
 *       entrypoint: src/index.handler   # Mayfly: "<file>.<export>" inside a folder
 *       environment: { KEY: value }
 *       secrets: [api-key]
 *       limits: { memory: 128Mi }
 *       timeout: 30s
 *       isolation: per-request
 *       labels: {}
 *       annotations: {}
 *
 * Unknown keys are errors naming their path (functions.hello.image: ...).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { FUNCTION_NAME_PATTERN, HANDLER_PATTERN, isolationSchema } from '../../contracts/functions.js';
import { usageError } from './errors.js';

const scalar = z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v));
const stringMap = z.record(z.string(), scalar);

const functionSchema = z.strictObject({
  lang: z.enum(['node', 'typescript', 'ts', 'javascript', 'js', 'dockerfile']).optional(),
  handler: z.string().min(1, 'must name a file or a folder').optional(),
  /** An OpenFaaS container image to run instead of code (pulled by the gateway). */
  image: z.string().min(1).max(512).optional(),
  /** The image's process (OpenFaaS's fprocess, sent as envProcess). */
  fprocess: z.string().min(1).max(4096).optional(),
  entrypoint: z.string().regex(HANDLER_PATTERN, 'must be "<file>.<export>", e.g. "src/index.handler"').optional(),
  environment: stringMap.optional(),
  secrets: z.array(z.string()).optional(),
  limits: z.strictObject({ memory: scalar.optional() }).optional(),
  timeout: scalar.optional(),
  isolation: isolationSchema.optional(),
  labels: stringMap.optional(),
  annotations: stringMap.optional(),
})
  .refine((f) => (f.handler === undefined) !== (f.image === undefined), 'needs either "handler" (code) or "image" (a container image), not both')
  .refine((f) => f.fprocess === undefined || f.image !== undefined, { message: 'only an image function has an fprocess', path: ['fprocess'] });

export const stackSchema = z.strictObject({
  version: scalar.optional(),
  provider: z.strictObject({ name: z.string().optional(), gateway: z.string().optional() }).optional(),
  functions: z
    .record(z.string().regex(FUNCTION_NAME_PATTERN, 'function names are 1 to 63 characters of a-z, 0-9 and "-"'), functionSchema)
    .refine((f) => Object.keys(f).length > 0, 'lists no function'),
});
export type Stack = z.infer<typeof stackSchema>;
export type StackFunction = z.infer<typeof functionSchema>;

const HINTS: Record<string, string> = {
  build_args: 'Mayfly builds packages itself (npm ci + esbuild): remove build_args',
  environment_file: 'list the variables under "environment"',
};

function describe(issue: z.core.$ZodIssue): string {
  const at = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys
      .map((k) => `${at ? `${at}.` : ''}${k}: unknown key${HINTS[k] ? ` (${HINTS[k]})` : ''}`)
      .join('; ');
  }
  if (issue.code === 'invalid_key') return `${at}: ${issue.issues[0]?.message ?? issue.message}`;
  return `${at || '(top level)'}: ${issue.message}`;
}

/** Reads and checks a stack file; every error is a usage error naming the file and key path. */
export function loadStack(file: string): { stack: Stack; dir: string } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw usageError(`cannot read the stack file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = e.linePos?.[0];
    throw usageError(`${file}${pos ? `:${pos.line}:${pos.col}` : ''}: not valid YAML: ${e.message.split('\n')[0]}`);
  }
  const parsed = stackSchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) throw usageError(`${file}: ${parsed.error.issues.map(describe).join('; ')}`);
  const name = parsed.data.provider?.name;
  if (name !== undefined && name !== 'mayfly' && name !== 'openfaas') {
    throw usageError(`${file}: provider.name: must be "mayfly" (or "openfaas"), got "${name}"`);
  }
  return { stack: parsed.data, dir: path.dirname(path.resolve(file)) };
}
