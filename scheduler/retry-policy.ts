/**
 * What to do with an async call after an attempt (pure, unit-tested):
 *  - final:   record the outcome (succeeded / failed / dead)
 *  - retry:   run it again after an exponential backoff, counting an attempt
 *  - requeue: the platform is full; wait and try again without counting an attempt
 *
 * Failures the function did not cause (VM died, worker lost, code fetch failed)
 * are retried up to MAYFLY_ASYNC_MAX_ATTEMPTS. The function's own failures are
 * retried only when it asks for it with the OpenFaaS annotations
 * com.openfaas.retry.attempts | codes | min_wait | max_wait.
 */
import type { CallStatus, InvokeResult, PlatformErrorCode } from '../contracts/bus.js';
import { parseTimeoutMs } from '../contracts/functions.js';

export interface RetryPolicy {
  /** Attempts for faults of the platform. */
  platformAttempts: number;
  /** Attempts for the function's own error status codes listed in `codes`. */
  functionAttempts: number;
  codes: Set<number>;
  minMs: number;
  maxMs: number;
}

export function retryPolicy(
  annotations: Record<string, string>,
  defaults: { maxAttempts: number; minMs: number; maxMs: number },
): RetryPolicy {
  const attempts = Number(annotations['com.openfaas.retry.attempts']);
  const codes = (annotations['com.openfaas.retry.codes'] ?? '')
    .split(/[\s,]+/)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n >= 100 && n <= 599);
  const min = annotations['com.openfaas.retry.min_wait'] ? parseTimeoutMs(annotations['com.openfaas.retry.min_wait']) : null;
  const max = annotations['com.openfaas.retry.max_wait'] ? parseTimeoutMs(annotations['com.openfaas.retry.max_wait']) : null;
  const functionAttempts = Number.isInteger(attempts) && attempts >= 1 ? Math.min(attempts, 100) : 1;
  return {
    platformAttempts: Math.max(defaults.maxAttempts, functionAttempts),
    functionAttempts,
    codes: new Set(codes),
    minMs: min ?? defaults.minMs,
    maxMs: Math.max(max ?? defaults.maxMs, min ?? defaults.minMs),
  };
}

/** min × 2^(attempt-1), capped, with ±20% jitter so retries of a burst do not align. */
export function backoffMs(attempt: number, policy: Pick<RetryPolicy, 'minMs' | 'maxMs'>, random = Math.random): number {
  const base = Math.min(policy.maxMs, policy.minMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** Platform faults: the function may never have run, or its VM or host died under it. */
const PLATFORM_FAULTS: ReadonlySet<PlatformErrorCode> = new Set(['VM_FAILED', 'CODE_UNAVAILABLE', 'INTERNAL', 'NO_SCHEDULER', 'HOST_LOST']);

export type Decision =
  | { action: 'final'; status: Extract<CallStatus, 'succeeded' | 'failed' | 'dead'> }
  | { action: 'retry'; delayMs: number }
  | { action: 'requeue'; delayMs: number };

/**
 * @param result  the attempt's result, or null when no result came back in time (worker lost)
 * @param statusCode the HTTP status the result maps to
 * @param attempts attempts made so far, this one included
 */
export function decide(result: InvokeResult | null, statusCode: number, attempts: number, policy: RetryPolicy): Decision {
  if (result?.outcome.kind === 'platform' && result.outcome.code === 'NO_CAPACITY') {
    return { action: 'requeue', delayMs: backoffMs(1, policy) };
  }
  const platformFault = result === null || (result.outcome.kind === 'platform' && PLATFORM_FAULTS.has(result.outcome.code));
  if (platformFault) {
    return attempts < policy.platformAttempts
      ? { action: 'retry', delayMs: backoffMs(attempts, policy) }
      : { action: 'final', status: 'dead' };
  }
  const failed = statusCode >= 500 || result.outcome.kind !== 'value';
  if (policy.codes.has(statusCode)) {
    if (attempts < policy.functionAttempts) return { action: 'retry', delayMs: backoffMs(attempts, policy) };
    return { action: 'final', status: 'dead' };
  }
  return { action: 'final', status: failed ? 'failed' : 'succeeded' };
}
