/**
 * What the gateway knows about one invocation request between its hooks: the
 * function (looked up before the body is read), the call id and the clock.
 */
import type { FastifyRequest } from 'fastify';
import type { InvokeResult, Trace } from '../contracts/bus.js';
import type { FunctionRecord } from '../contracts/functions.js';

export interface InvocationContext {
  fn: FunctionRecord;
  callId: string;
  /** performance.now() when the gateway accepted the request (function found). */
  acceptedAt: number;
  /** performance.now() when the result arrived. */
  finishedAt?: number;
  result?: InvokeResult;
  /** Timing stamps when the client asked for them (X-Mayfly-Trace). */
  trace?: Trace;
}

const contexts = new WeakMap<FastifyRequest, InvocationContext>();

export function setInvocationContext(request: FastifyRequest, ctx: InvocationContext): void {
  contexts.set(request, ctx);
}

export function getInvocationContext(request: FastifyRequest): InvocationContext | undefined {
  return contexts.get(request);
}

/** Seconds from acceptance to the result (or to now), as measured by this gateway. */
export function invocationSeconds(ctx: InvocationContext, now = performance.now()): number {
  return Math.max(0, ((ctx.finishedAt ?? now) - ctx.acceptedAt) / 1000);
}
