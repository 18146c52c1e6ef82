/**
 * Every metric the gateway exports, declared here and nowhere else. Names and
 * labels follow the OpenFaaS gateway so its dashboards work unchanged.
 *
 * One registry per gateway instance (not prom-client's global one), so several
 * gateways can live in one process (tests). It includes prom-client's default
 * process metrics (CPU, memory, event loop lag, GC, ...).
 *
 * - gateway_function_invocation_total{function_name,code}: finished sync invocations
 *   by HTTP status code; counted by this gateway process only.
 * - gateway_functions_seconds{function_name,code}: gateway-measured duration (request
 *   accepted → result), the value of X-Duration-Seconds.
 * - gateway_service_count{function_name}: 1 per existing function. Set from the list of
 *   functions whenever GET /system/functions or GET /metrics is served (functions scale
 *   from zero, so "replicas" is always 1 in Mayfly).
 * - gateway_function_invocation_started{function_name}: invocations handed to the backend.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const METRIC_NAMES = {
  invocationTotal: 'gateway_function_invocation_total',
  functionSeconds: 'gateway_functions_seconds',
  serviceCount: 'gateway_service_count',
  invocationStarted: 'gateway_function_invocation_started',
} as const;

/** Seconds. Beyond OpenFaaS's defaults (10s) because cold VM starts under TCG take seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly invocationTotal: Counter<'function_name' | 'code'>;
  private readonly functionSeconds: Histogram<'function_name' | 'code'>;
  private readonly serviceCount: Gauge<'function_name'>;
  private readonly invocationStarted: Counter<'function_name'>;
  /** Finished invocations per function, since this process started or the function was deleted. */
  private readonly counts = new Map<string, number>();

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.invocationTotal = new Counter({
      name: METRIC_NAMES.invocationTotal,
      help: 'Synchronous function invocations by HTTP status code (this gateway process)',
      labelNames: ['function_name', 'code'],
      registers,
    });
    this.functionSeconds = new Histogram({
      name: METRIC_NAMES.functionSeconds,
      help: 'Invocation duration measured by the gateway, in seconds',
      labelNames: ['function_name', 'code'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.serviceCount = new Gauge({
      name: METRIC_NAMES.serviceCount,
      help: 'Deployed functions (1 per function; functions scale from zero)',
      labelNames: ['function_name'],
      registers,
    });
    this.invocationStarted = new Counter({
      name: METRIC_NAMES.invocationStarted,
      help: 'Function invocations handed to the platform (this gateway process)',
      labelNames: ['function_name'],
      registers,
    });
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
