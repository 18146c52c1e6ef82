/**
 * The scheduler's metrics (definitions: SCHEDULER_METRICS, QUEUE_METRICS and,
 * for async calls, GATEWAY_METRICS in contracts/metrics.ts), served on its own
 * /metrics listener (MAYFLY_METRICS_HOST:MAYFLY_SCHEDULER_METRICS_PORT).
 *
 * Async calls never pass back through a gateway, so the scheduler counts them
 * under the OpenFaaS names when their final result is recorded (like OpenFaaS's
 * queue-worker reporting to its gateway): sum over jobs of
 * gateway_function_invocation_total counts every call, sync or async, once.
 */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { GATEWAY_METRICS, QUEUE_METRICS, SCHEDULER_METRICS, TRIGGER_METRICS, type PlacementReasonLabel } from '../contracts/metrics.js';
import { counter, createRegistry, gauge, histogram } from '../lib/metrics.js';

/** What the gauges read at scrape time. */
export interface SchedulerGaugeSource {
  hostsAlive(): number;
  /** Async calls running on this replica, per function. */
  asyncInflight(): ReadonlyMap<string, number>;
  /** The durable consumer's backlog: num_pending (waiting) and num_ack_pending (running). */
  queueDepth(): Promise<{ waiting: number; running: number }>;
}

/** A scrape must not hang on NATS: the queue depth sample gives up after this. */
const SAMPLE_TIMEOUT_MS = 2000;

export type FinalAsyncStatus = 'succeeded' | 'failed' | 'dead' | 'cancelled';

export class SchedulerMetrics {
  readonly registry: Registry = createRegistry();
  private source: SchedulerGaugeSource | null = null;
  private readonly placements: Counter<'reason'>;
  private readonly placementSeconds: Histogram<'reason'>;
  private readonly invocationTotal: Counter<'function_name' | 'code'>;
  private readonly functionSeconds: Histogram<'function_name' | 'code'>;
  private readonly processed: Counter<'function_name' | 'status'>;
  private readonly retriedTotal: Counter<'function_name'>;
  private readonly deadTotal: Counter<'function_name'>;
  /** Trigger metrics (TRIGGER_METRICS): counted by scheduler/triggers/ and, for finished calls, here. */
  readonly triggers: {
    messages: Counter<'trigger'>;
    started: Counter<'trigger' | 'function_name'>;
    rejected: Counter<'trigger' | 'function_name' | 'reason'>;
    finished: Counter<'trigger' | 'function_name' | 'status'>;
  };

  constructor() {
    const r = this.registry;
    this.placements = counter(r, SCHEDULER_METRICS.placements);
    this.placementSeconds = histogram(r, SCHEDULER_METRICS.placementSeconds);
    for (const reason of ['warm', 'snapshot', 'pool', 'memory', 'none'] satisfies PlacementReasonLabel[]) this.placements.inc({ reason }, 0);
    this.invocationTotal = counter(r, GATEWAY_METRICS.invocationTotal);
    this.functionSeconds = histogram(r, GATEWAY_METRICS.functionSeconds);
    this.processed = counter(r, QUEUE_METRICS.processed);
    this.retriedTotal = counter(r, QUEUE_METRICS.retried);
    this.deadTotal = counter(r, QUEUE_METRICS.dead);
    this.triggers = {
      messages: counter(r, TRIGGER_METRICS.messages),
      started: counter(r, TRIGGER_METRICS.started),
      rejected: counter(r, TRIGGER_METRICS.rejected),
      finished: counter(r, TRIGGER_METRICS.finished),
    };

    const src = () => this.source;
    gauge(r, SCHEDULER_METRICS.hostsAlive, function (this: Gauge) {
      const s = src();
      if (s) this.set(s.hostsAlive());
    });
    gauge(r, QUEUE_METRICS.inflight, function (this: Gauge<'function_name'>) {
      const s = src();
      if (!s) return;
      this.reset();
      for (const [fn, n] of s.asyncInflight()) this.set({ function_name: fn }, n);
    });
    gauge(r, QUEUE_METRICS.pending, async function (this: Gauge<'state'>) {
      const s = src();
      if (!s) return;
      let timer: NodeJS.Timeout | undefined;
      try {
        const depth = await Promise.race([
          s.queueDepth(),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), SAMPLE_TIMEOUT_MS))),
        ]);
        this.set({ state: 'waiting' }, depth.waiting);
        this.set({ state: 'running' }, depth.running);
      } catch {
        this.reset(); // unknown (NATS away): absent rather than stale
      } finally {
        clearTimeout(timer);
      }
    });
  }

  attach(source: SchedulerGaugeSource): void {
    this.source = source;
  }

  /** A placement ended: a host accepted (its reason) or none did. */
  placed(reason: PlacementReasonLabel, seconds: number): void {
    this.placements.inc({ reason });
    this.placementSeconds.observe({ reason }, seconds);
  }

  /** An async call got its final record (written by this replica). */
  asyncFinished(functionName: string, status: FinalAsyncStatus, statusCode: number, seconds: number): void {
    const labels = { function_name: functionName, code: String(statusCode) };
    this.invocationTotal.inc(labels);
    this.functionSeconds.observe(labels, Math.max(0, seconds));
    this.processed.inc({ function_name: functionName, status });
    if (status === 'dead') this.deadTotal.inc({ function_name: functionName });
  }

  /** A trigger call got its final record (written by this replica). */
  triggerFinished(trigger: string, functionName: string, status: FinalAsyncStatus): void {
    this.triggers.finished.inc({ trigger, function_name: functionName, status });
  }

  /** An async attempt was put back in the queue to be tried again. */
  asyncRetried(functionName: string): void {
    this.retriedTotal.inc({ function_name: functionName });
  }
}
