/**
 * What the HTTP layer needs from the rest of the platform (faas-provider's idea:
 * a small handler interface in front of the backend). The NATS implementation
 * is ./nats-backend.ts; unit tests of the routes may use an in-memory one.
 */
import type { AsyncCall, CallRecord, CallStatus, InvokeResult, Trace } from '../contracts/bus.js';
import type { DeployRequest, FunctionRecord } from '../contracts/functions.js';
import type { InvocationEvent } from '../contracts/guest-protocol.js';
import type { FunctionLogEntry, LogsQuery } from '../lib/function-logs.js';

export interface GatewayBackend {
  /** Throws FunctionStoreError (lib/function-store.ts) for what the user can fix. */
  createFunction(req: DeployRequest): Promise<FunctionRecord>;
  updateFunction(req: DeployRequest): Promise<FunctionRecord>;
  getFunction(name: string): Promise<FunctionRecord | null>;
  listFunctions(): Promise<FunctionRecord[]>;
  /** false when there was no such function. */
  deleteFunction(name: string): Promise<boolean>;
  /**
   * Runs one synchronous invocation and resolves with its result. Platform
   * failures (no scheduler, no capacity, timeout) come back as an InvokeResult
   * with outcome.kind "platform", not as a rejection. `trace`: stamps so far of a
   * traced call (lib/trace.ts); the result carries them on with every hop's own.
   */
  invoke(fn: FunctionRecord, callId: string, event: InvocationEvent, trace?: Trace): Promise<InvokeResult>;
  /**
   * Stores an async call durably (record `queued`, then the work queue) and
   * resolves only once it is stored. `duplicate`: this call id was accepted
   * before, and nothing new was queued.
   */
  submitAsync(fn: FunctionRecord, call: AsyncCall): Promise<{ duplicate: boolean }>;
  getCall(callId: string): Promise<CallRecord | null>;
  listCalls(filter: { function?: string; status?: CallStatus; limit: number }): Promise<CallRecord[]>;
  /** Cancels a call that has not started; otherwise reports its record unchanged. */
  cancelCall(callId: string): Promise<{ cancelled: boolean; record: CallRecord | null }>;
  /** Secrets: values go in, names come out. Throws SecretError (lib/secrets.ts) for what the user can fix. */
  createSecret(name: string, value: string): Promise<void>;
  updateSecret(name: string, value: string): Promise<void>;
  listSecrets(): Promise<Array<{ name: string; createdAt: string; updatedAt: string }>>;
  deleteSecret(name: string): Promise<boolean>;
  /** Whether the backend can serve (NATS connected). */
  healthy(): boolean;
  /**
   * A function's log lines (GET /system/logs), oldest first, from its call
   * records (lib/function-logs.ts). Optional: without it the route reads them
   * through listCalls.
   */
  functionLogs?(query: LogsQuery): Promise<FunctionLogEntry[]>;
  /**
   * POST /system/scale-function: sets the ready VMs a function asks for
   * (contracts/scale.ts), same version. null when there is no such function.
   * Optional: without it the route answers 501.
   */
  scaleFunction?(name: string, replicas: number): Promise<FunctionRecord | null>;
}
