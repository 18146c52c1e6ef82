/**
 * The gateway's metrics. Names, labels and help live in contracts/metrics.ts
 * (GATEWAY_METRICS, QUEUE_METRICS); they follow the OpenFaaS gateway so its
 * dashboards work unchanged.
 *
 * One registry per gateway instance (not prom-client's global one), so several
 * gateways can live in one process (tests). It includes prom-client's default
 * process metrics (CPU, memory, event loop lag, GC, ...).
 *
 * - gateway_function_invocation_total{function_name,code}: finished sync invocations
 *   by HTTP status code, counted by this gateway process (async ones are counted by
 *   the scheduler when they finish).
 * - gateway_functions_seconds{function_name,code}: gateway-measured duration (request
 *   accepted → result), the value of X-Duration-Seconds.
 * - gateway_service_count{function_name}: 1 per existing function. Set from the list of
 *   functions whenever GET /system/functions or GET /metrics is served (functions scale
 *   from zero, so "replicas" is always 1 in Mayfly).
 * - gateway_function_invocation_started{function_name}: sync invocations handed to the
 *   backend and async calls accepted into the queue.
 * - mayfly_queue_submitted_total{function_name}: async calls accepted (202, not duplicates).
 */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DURATION_BUCKETS as BUCKETS, GATEWAY_METRICS, QUEUE_METRICS } from '../contracts/metrics.js';
import { counter, createRegistry, histogram, untypedCounter, untypedGauge } from '../lib/metrics.js';
import type { GatewayBackend } from './backend.js';

export const METRIC_NAMES = {
  invocationTotal: GATEWAY_METRICS.invocationTotal.name,
  functionSeconds: GATEWAY_METRICS.functionSeconds.name,
  serviceCount: GATEWAY_METRICS.serviceCount.name,
  invocationStarted: GATEWAY_METRICS.invocationStarted.name,
} as const;

/** Seconds. Beyond OpenFaaS's defaults (10s) because cold VM starts under TCG take seconds. */
export const DURATION_BUCKETS: number[] = [...BUCKETS];

export class GatewayMetrics {
  readonly registry: Registry = createRegistry();
  private readonly invocationTotal: Counter<'function_name' | 'code'>;
  private readonly functionSeconds: Histogram<'function_name' | 'code'>;
  private readonly serviceCount: Gauge<'function_name'>;
  private readonly invocationStarted: Counter<'function_name'>;
  private readonly queueSubmitted: Counter<'function_name'>;
  private readonly invokeRoutes: Counter<'route'>;
  /** Finished invocations per function, since this process started or the function was deleted. */
  private readonly counts = new Map<string, number>();

  constructor() {
    this.invocationTotal = counter(this.registry, GATEWAY_METRICS.invocationTotal);
    this.functionSeconds = histogram(this.registry, GATEWAY_METRICS.functionSeconds);
    this.serviceCount = untypedGauge(this.registry, GATEWAY_METRICS.serviceCount);
    this.invocationStarted = untypedCounter(this.registry, GATEWAY_METRICS.invocationStarted);
    this.queueSubmitted = counter(this.registry, QUEUE_METRICS.submitted);
    this.invokeRoutes = counter(this.registry, GATEWAY_METRICS.invokeRoutes);
  }

  invocationStartedFor(functionName: string): void {
    this.invocationStarted.inc({ function_name: functionName });
  }

  invocationFinished(functionName: string, statusCode: number, seconds: number): void {
    const labels = { function_name: functionName, code: String(statusCode) };
    this.invocationTotal.inc(labels);
    this.functionSeconds.observe(labels, seconds);
    this.counts.set(functionName, (this.counts.get(functionName) ?? 0) + 1);
  }

  /** How a sync call reached its worker (InvokeResult.route). */
  routed(route: 'direct' | 'placed'): void {
    this.invokeRoutes.inc({ route });
  }

  /** An async call stored in the queue (not a repeated call id). */
  asyncSubmitted(functionName: string): void {
    this.invocationStarted.inc({ function_name: functionName });
    this.queueSubmitted.inc({ function_name: functionName });
  }

  /** invocationCount of GET /system/functions: per gateway process. */
  invocationCount(functionName: string): number {
    return this.counts.get(functionName) ?? 0;
  }

  /** Replaces gateway_service_count with exactly these functions. */
  setServices(functionNames: readonly string[]): void {
    this.serviceCount.reset();
    for (const name of functionNames) this.serviceCount.set({ function_name: name }, 1);
  }

  functionDeleted(functionName: string): void {
    this.counts.delete(functionName);
    this.serviceCount.remove({ function_name: functionName });
  }

  contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * The backend as the routes see it, counting accepted async calls. Every other
 * member is looked up on `backend` at call time (a Proxy), so replacing a
 * method of the backend later (tests do) still takes effect.
 */
export function countAsyncSubmissions(backend: GatewayBackend, metrics: GatewayMetrics): GatewayBackend {
  const submitAsync: GatewayBackend['submitAsync'] = async (fn, call) => {
    const res = await backend.submitAsync(fn, call);
    if (!res.duplicate) metrics.asyncSubmitted(fn.name);
    return res;
  };
  return new Proxy(backend, {
    get(target, prop, receiver) {
      if (prop === 'submitAsync') return submitAsync;
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
