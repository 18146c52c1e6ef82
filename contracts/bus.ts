/**
 * NATS subjects, stores and messages shared by gateway, scheduler and worker:
 * each message has exactly this one definition.
 *
 * Sync invocation, one hop (a worker holds a VM or snapshot of the function version):
 *   gateway   --request SUBJECTS.functionInvoke(name, version) (queue group "workers")--> worker
 *   worker    --respond InvokeResult (or DirectRefusal: then the scheduler path below)
 * Sync invocation, placed:
 *   gateway   --request SUBJECTS.invoke (queue group "schedulers")--> scheduler
 *   scheduler --request SUBJECTS.hostInvoke(host)--> worker: offer, answered at once
 *             with { accepted } (admission); refused or silent → next host
 *   worker    --publish InvokeResult to the gateway's reply subject (`replyTo`)
 * The scheduler answers the gateway itself only when no host took the call.
 */
import { z } from 'zod';
import { errorInfoSchema, invocationEventSchema } from './guest-protocol.js';
import { functionRecordSchema } from './functions.js';

export const SUBJECTS = {
  invoke: 'mayfly.invoke',
  /** Async calls, stored in the STREAMS.async work queue. */
  asyncSubmit: 'mayfly.async.submit',
  heartbeat: 'mayfly.heartbeat',
  hostInvoke: (hostId: string) => `mayfly.host.${hostId}.invoke`,
  /**
   * The one-hop path: workers that hold a VM or a snapshot of this function
   * version subscribe here (queue group `workers`) and answer the request with
   * the InvokeResult, or with a DirectRefusal when they cannot take the call
   * without starting more than they have room for (the gateway then asks the scheduler).
   */
  functionInvoke: (name: string, version: number) => `mayfly.fn.${name}.${version}`,
  /**
   * Where the worker publishes the result of one attempt of an async call (the
   * attempt's replyTo), stored in STREAMS.asyncResults so a scheduler that takes
   * over a call finds the result of an attempt its predecessor was waiting for.
   * The call id is base64url-encoded: it may contain dots.
   */
  asyncResults: 'mayfly.async.result.>',
  asyncResult: (callId: string, attempt: number) => `mayfly.async.result.${attempt}.${Buffer.from(callId).toString('base64url')}`,
  /**
   * A gateway whose NATS connection came back (its node died) publishes a ResendRequest with the
   * sync calls it still waits for: a reply published while it was away is gone. Every worker
   * publishes again the result of any of them it finished in the last minute (to the same reply
   * subject) and a CallAccepted for any it still runs (worker/recent-results.ts).
   */
  resend: 'mayfly.calls.resend',
} as const;

export const QUEUE_GROUPS = { schedulers: 'mayfly-schedulers', workers: 'mayfly-workers' } as const;

export const STREAMS = {
  /** Work queue of accepted async calls; a message is removed when a scheduler acks it. */
  async: 'MAYFLY_ASYNC',
  /** Results of async call attempts (SUBJECTS.asyncResult), the last per attempt, kept for an hour. */
  asyncResults: 'MAYFLY_ASYNC_RESULTS',
} as const;

/** Durable pull consumer shared by all scheduler replicas. */
export const ASYNC_CONSUMER = 'mayfly-schedulers';

export const STORES = {
  /** KV bucket: call id → CallRecord (expires with the bucket's max age). */
  calls: 'mayfly_calls',
  /** KV bucket: API token id → its name and sha256 hash. */
  tokens: 'mayfly_tokens',
  /** KV bucket: secret name → value, AES-256-GCM encrypted with the operator's key. */
  secrets: 'mayfly_secrets',
  /** KV bucket: function name → FunctionRecord. */
  functions: 'mayfly_functions',
  /** Object store: code by content hash. */
  code: 'mayfly_code',
} as const;

export const hostIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);

/** How the VM that ran a call was obtained. */
/** How a call's VM was obtained: booted, from the pool, a template clone, a function snapshot clone, or a warm VM unpaused. */
export const startKindSchema = z.enum(['cold', 'pool', 'clone', 'snapshot', 'warm']);
export type StartKind = z.infer<typeof startKindSchema>;

/** Timing stamps of a traced call ([step, ms since epoch]); see lib/trace.ts. */
export const traceSchema = z.array(z.tuple([z.string().max(32), z.number()])).max(32);
export type Trace = z.infer<typeof traceSchema>;

export const invokeRequestSchema = z.object({
  callId: z.string().min(1).max(128),
  fn: functionRecordSchema,
  event: invocationEventSchema,
  /** Subject the final InvokeResult goes to. */
  replyTo: z.string().min(1),
  /** When the gateway accepted the call (ms since epoch), for queue-wait metrics. */
  receivedAt: z.number(),
  /**
   * Set by the scheduler on each offer: a worker must not accept after this
   * time (ms since epoch), because the scheduler may have offered the call to
   * another host by then. Keeps a sync call from running twice.
   */
  offerExpiresAt: z.number().default(0),
  /** Present when the caller asked for a timing trace: each hop appends its stamps. */
  trace: traceSchema.optional(),
  /**
   * Where the worker that admits the call publishes a CallAccepted (which host runs it), so a
   * waiting gateway can answer HOST_LOST when that host's heartbeats stop (lib/host-watch.ts).
   */
  acceptedTo: z.string().min(1).optional(),
});
export type InvokeRequest = z.infer<typeof invokeRequestSchema>;

/** A worker's answer on SUBJECTS.functionInvoke when it did not take the call (nothing of it ran). */
export const directReplySchema = z.strictObject({ refused: z.string(), hostId: hostIdSchema });
export type DirectRefusal = z.infer<typeof directReplySchema>;

/** Published by a worker to a request's `acceptedTo` when it admits the call. */
export const callAcceptedSchema = z.object({ callId: z.string(), hostId: hostIdSchema });
export type CallAccepted = z.infer<typeof callAcceptedSchema>;

export const resendRequestSchema = z.object({ callIds: z.array(z.string().min(1).max(128)).max(10_000) });
export type ResendRequest = z.infer<typeof resendRequestSchema>;

export const offerReplySchema = z.union([
  z.object({ accepted: z.literal(true), hostId: hostIdSchema }),
  z.object({ accepted: z.literal(false), hostId: hostIdSchema, reason: z.string() }),
]);
export type OfferReply = z.infer<typeof offerReplySchema>;

/** Platform failure codes a user sees (5xx), next to the function's own errors. */
export const platformErrorCodeSchema = z.enum([
  'NO_CAPACITY',
  'NO_SCHEDULER',
  'FUNCTION_TIMEOUT',
  'INIT_FAILED',
  'VM_FAILED',
  'GUEST_FAULT',
  'CODE_UNAVAILABLE',
  'INTERNAL',
  /** The host running the call stopped heartbeating (died or cut off the bus); the function may or may not have run. */
  'HOST_LOST',
]);
export type PlatformErrorCode = z.infer<typeof platformErrorCodeSchema>;

export const logLineSchema = z.object({ stream: z.enum(['stdout', 'stderr']), line: z.string() });

export const invokeResultSchema = z.object({
  callId: z.string(),
  hostId: z.string().optional(),
  start: startKindSchema.optional(),
  durationMs: z.number(),
  logs: z.array(logLineSchema),
  trace: traceSchema.optional(),
  /** Set by the gateway, not the worker: the call reached its worker in one hop (`direct`) or through the scheduler (`placed`). */
  route: z.enum(['direct', 'placed']).optional(),
  outcome: z.discriminatedUnion('kind', [
    /** The handler returned; `value` absent means undefined. */
    z.object({ kind: z.literal('value'), value: z.unknown().optional() }),
    /** The handler threw or rejected. */
    z.object({ kind: z.literal('error'), error: errorInfoSchema }),
    /** The platform could not run it (or the VM failed). */
    z.object({ kind: z.literal('platform'), code: platformErrorCodeSchema, message: z.string() }),
  ]),
});
export type InvokeResult = z.infer<typeof invokeResultSchema>;

export const heartbeatSchema = z.object({
  hostId: hostIdSchema,
  /** Address of the worker's /metrics, for Prometheus discovery. */
  metricsUrl: z.string().optional(),
  sentAt: z.number(),
  memoryBudgetMiB: z.number(),
  memoryReservedMiB: z.number(),
  inflight: z.number().int(),
  vms: z.record(z.string(), z.number().int()),
  /** `name@version` of functions with an idle warm VM on this host. */
  warm: z.array(z.string()),
  /** Ready pre-booted VMs per runtime. */
  pools: z.record(z.string(), z.number().int()),
  /** `name@version` of functions with a ready function snapshot on this host (com.mayfly.snapshot). */
  snapshots: z.array(z.string()).default([]),
  /** Ready VMs (snapshot clones, paused) per `name@version`: a function's OpenFaaS availableReplicas on this host. */
  ready: z.record(z.string(), z.number().int()).optional(),
});
export type Heartbeat = z.infer<typeof heartbeatSchema>;

/** An accepted async call, as stored in the work queue (Nats-Msg-Id = callId). */
export const asyncCallSchema = z.object({
  callId: z.string().min(1).max(128),
  functionName: z.string(),
  event: invocationEventSchema,
  callbackUrl: z.string().url().optional(),
  submittedAt: z.number(),
  /** The trigger that started the call (contracts/triggers.ts): `subject:<pattern>` or `schedule`. */
  trigger: z.string().max(300).optional(),
});
export type AsyncCall = z.infer<typeof asyncCallSchema>;

export const callStatusSchema = z.enum(['queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled']);
export type CallStatus = z.infer<typeof callStatusSchema>;
export const FINAL_STATUSES: ReadonlySet<CallStatus> = new Set(['succeeded', 'failed', 'dead', 'cancelled']);

/** One call, sync or async, in the style of an OpenWhisk activation. */
export const callRecordSchema = z.object({
  callId: z.string(),
  function: z.string(),
  mode: z.enum(['sync', 'async']),
  status: callStatusSchema,
  attempts: z.number().int(),
  statusCode: z.number().int().optional(),
  result: z.unknown().optional(),
  error: z.string().optional(),
  /**
   * The stack of an error the handler threw (source-mapped to the user's own files
   * for packages and TypeScript). Only here, behind the management API: the HTTP
   * answer to the caller carries the message and the call id, never the stack.
   */
  errorStack: z.string().max(64 * 1024).optional(),
  /** Last lines of the function's logs (bounded). */
  logs: z.array(logLineSchema),
  queuedAt: z.string(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
  start: startKindSchema.optional(),
  hostId: z.string().optional(),
  callbackUrl: z.string().optional(),
  /**
   * pending → sending (claimed with compare-and-set right before the POST) →
   * sent | failed. Only the claimer POSTs, so a call gets at most one callback
   * even when its message is redelivered to another scheduler.
   */
  callbackStatus: z.enum(['pending', 'sending', 'sent', 'failed']).optional(),
  /** The trigger that started the call, for calls from a NATS subject or a schedule (contracts/triggers.ts). */
  trigger: z.string().optional(),
});
export type CallRecord = z.infer<typeof callRecordSchema>;
