/**
 * The guest protocol: every message exchanged between the worker and the guest
 * agent over the VM's byte channel (virtio-console on QEMU), as zod schemas.
 * Frames are encoded by ./frame.ts. Sequence (DESIGN.md, "Guest protocol"):
 *
 *   guest → host  ready                     agent is up, channel is open
 *   (host → guest reseed → guest → host ready: only for a VM cloned from a template)
 *   host  → guest init                      code, handler name, env (once)
 *   guest → host  initialized               handler loaded, or why not
 *   host  → guest run                       one invocation
 *   guest → host  log*                      console output of that invocation
 *   guest → host  result                    the handler's value or its error
 *
 * The host validates every guest frame with these schemas: anything else ends
 * the VM (see worker/guest-channel.ts).
 */
import { z } from 'zod';

/** Largest frame either side accepts. Bodies are limited to 6 MiB by default; base64 adds a third. */
export const MAX_FRAME_BYTES = 9 * 1024 * 1024;
/** The agent cuts longer console lines; the host rejects longer ones. */
export const MAX_LOG_LINE_CHARS = 8192;

const headerMap = z.record(z.string(), z.string());

export const invocationEventSchema = z.object({
  method: z.string().min(1).max(16),
  path: z.string().max(4096),
  query: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
  headers: headerMap,
  body: z.string(),
  isBase64Encoded: z.boolean(),
  /** Calls started by a trigger (contracts/triggers.ts): the NATS subject of the message, or `cron-function` for a tick. */
  topic: z.string().max(255).optional(),
});
export type InvocationEvent = z.infer<typeof invocationEventSchema>;

// ---- host → guest ----------------------------------------------------------

export const initMessageSchema = z.object({
  type: z.literal('init'),
  functionName: z.string(),
  code: z.string(),
  handler: z.string(),
  env: z.record(z.string(), z.string()),
  memoryLimitInMB: z.number().int().positive(),
  /** The function's own secrets only; the agent writes them to /var/openfaas/secrets/<name> (mode 0400). */
  secrets: z.record(z.string(), z.string()).optional(),
  /**
   * Compile every function of the module when it loads (V8 --no-lazy), not at
   * its first call: set for a function snapshot, so its clones find the
   * handler compiled instead of running V8's compiler under emulation per VM.
   */
  eager: z.boolean().optional(),
  /** An image function: `code` is its watchdog spec (contracts/watchdog.ts), run by functions/agent/watchdog.ts. */
  watchdog: z.boolean().optional(),
});
export type InitMessage = z.infer<typeof initMessageSchema>;

export const runMessageSchema = z.object({
  type: z.literal('run'),
  callId: z.string(),
  event: invocationEventSchema,
  /** Time the handler may take. The guest turns it into its own clock's deadline. */
  timeoutMs: z.number().int().positive(),
});
export type RunMessage = z.infer<typeof runMessageSchema>;

/**
 * Sent to a VM restored from a template snapshot, before anything else: fresh
 * entropy (base64, 64 bytes) so the clone's random numbers differ from every
 * other clone's, and its own id. The agent answers with a new `ready`.
 */
export const reseedMessageSchema = z.object({
  type: z.literal('reseed'),
  entropy: z.string(),
  vmId: z.string(),
});
export type ReseedMessage = z.infer<typeof reseedMessageSchema>;

/**
 * Runs the agent's own invocation path once (frame, event, context, result
 * encoding) with a built-in no-op handler, never the user's: a template does it
 * before its snapshot, so clones find that code compiled (V8) and a clone does
 * it before it waits in a pool, so TCG has translated it in that QEMU process.
 * The agent answers with a `result` whose callId is WARMUP_CALL_ID.
 */
export const warmupMessageSchema = z.object({ type: z.literal('warmup') });
export type WarmupMessage = z.infer<typeof warmupMessageSchema>;
export const WARMUP_CALL_ID = 'mayfly-warmup';

export const hostMessageSchema = z.discriminatedUnion('type', [initMessageSchema, runMessageSchema, reseedMessageSchema, warmupMessageSchema]);
export type HostMessage = z.infer<typeof hostMessageSchema>;

// ---- guest → host ----------------------------------------------------------

const callId = z.string().min(1).max(128);

export const readyMessageSchema = z.strictObject({
  type: z.literal('ready'),
  runtime: z.string().max(64),
  runtimeVersion: z.string().max(64),
  kernel: z.string().max(256),
  agentVersion: z.string().max(64),
});

export const errorInfoSchema = z.strictObject({
  name: z.string().max(256),
  message: z.string().max(64 * 1024),
  stack: z.string().max(64 * 1024).optional(),
});
export type ErrorInfo = z.infer<typeof errorInfoSchema>;

export const initializedMessageSchema = z.union([
  z.strictObject({ type: z.literal('initialized'), ok: z.literal(true) }),
  z.strictObject({ type: z.literal('initialized'), ok: z.literal(false), error: errorInfoSchema }),
]);

export const logMessageSchema = z.strictObject({
  type: z.literal('log'),
  callId: callId.nullable(),
  stream: z.enum(['stdout', 'stderr']),
  line: z.string().max(MAX_LOG_LINE_CHARS),
});
export type LogMessage = z.infer<typeof logMessageSchema>;

export const resultMessageSchema = z.union([
  /** `value` absent means the handler returned undefined. */
  z.strictObject({ type: z.literal('result'), callId, ok: z.literal(true), value: z.unknown().optional() }),
  z.strictObject({ type: z.literal('result'), callId, ok: z.literal(false), error: errorInfoSchema }),
]);
export type ResultMessage = z.infer<typeof resultMessageSchema>;

export const guestMessageSchema = z.union([
  readyMessageSchema,
  initializedMessageSchema,
  logMessageSchema,
  resultMessageSchema,
]);
export type GuestMessage = z.infer<typeof guestMessageSchema>;
