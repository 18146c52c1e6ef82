/**
 * The worker's metrics (definitions: WORKER_METRICS in contracts/metrics.ts),
 * served on its own /metrics listener (MAYFLY_METRICS_HOST:MAYFLY_WORKER_METRICS_PORT).
 * Counters and histograms are fed as things happen; gauges (VMs by state,
 * memory, pools, in-flight calls) are read from the VM manager when scraped.
 */
import type { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { StartKind } from '../contracts/bus.js';
import { vmStartKindLabel, WORKER_METRICS } from '../contracts/metrics.js';
import { counter, createRegistry, gauge, histogram } from '../lib/metrics.js';

const MiB = 1024 * 1024;

/** What the gauges read at scrape time (the VM manager and the service). */
export interface WorkerGaugeSource {
  stats(): { vms: Record<string, number>; pools: Record<string, number>; poolTarget: number };
  reservedMiB: number;
  budgetMiB: number;
  inflight(): number;
}

export class WorkerMetrics {
  readonly registry: Registry = createRegistry();
  private source: WorkerGaugeSource | null = null;
  private readonly vmStart: Histogram<'host' | 'runtime' | 'kind'>;
  private readonly coldStarts: Counter<'function_name'>;
  private readonly warmStarts: Counter<'function_name'>;
  private readonly waitSeconds: Histogram<'function_name'>;
  private readonly refills: Counter<'host' | 'runtime'>;
  private readonly refillFailures: Counter<'host' | 'runtime'>;
  private readonly refillSeconds: Histogram<'host' | 'runtime'>;
  private readonly reclaimedBytes: Counter<'host'>;
  private readonly reclaims: Counter<'host'>;

  constructor(
    readonly hostId: string,
    /** The runtime the pool holds VMs of (one image per worker today). */
    private readonly poolRuntime = 'node',
  ) {
    const r = this.registry;
    const host = hostId;
    this.vmStart = histogram(r, WORKER_METRICS.vmStartSeconds);
    this.coldStarts = counter(r, WORKER_METRICS.coldStarts);
    this.warmStarts = counter(r, WORKER_METRICS.warmStarts);
    this.waitSeconds = histogram(r, WORKER_METRICS.invocationWaitSeconds);
    this.refills = counter(r, WORKER_METRICS.poolRefills);
    this.refillFailures = counter(r, WORKER_METRICS.poolRefillFailures);
    this.refillSeconds = histogram(r, WORKER_METRICS.poolRefillSeconds);
    this.reclaimedBytes = counter(r, WORKER_METRICS.vmReclaimedBytes);
    this.reclaims = counter(r, WORKER_METRICS.vmReclaims);
    this.reclaims.inc({ host }, 0);
    this.reclaimedBytes.inc({ host }, 0);
    // Present from the first scrape (0), so rate() sees the first refill.
    this.refills.inc({ host, runtime: poolRuntime }, 0);
    this.refillFailures.inc({ host, runtime: poolRuntime }, 0);

    const src = () => this.source;
    gauge(r, WORKER_METRICS.vms, function (this: Gauge<'host' | 'state'>) {
      const s = src()?.stats();
      if (!s) return;
      for (const [state, n] of Object.entries(s.vms)) this.set({ host, state }, n);
    });
    gauge(r, WORKER_METRICS.inflight, function (this: Gauge<'host'>) {
      const s = src();
      if (s) this.set({ host }, s.inflight());
    });
    gauge(r, WORKER_METRICS.memoryBudget, function (this: Gauge<'host'>) {
      const s = src();
      if (s) this.set({ host }, s.budgetMiB * MiB);
    });
    gauge(r, WORKER_METRICS.memoryReserved, function (this: Gauge<'host'>) {
      const s = src();
      if (s) this.set({ host }, s.reservedMiB * MiB);
    });
    gauge(r, WORKER_METRICS.memoryFree, function (this: Gauge<'host'>) {
      const s = src();
      if (s) this.set({ host }, Math.max(0, s.budgetMiB - s.reservedMiB) * MiB);
    });
    gauge(r, WORKER_METRICS.poolReady, function (this: Gauge<'host' | 'runtime'>) {
      const s = src()?.stats();
      if (!s) return;
      for (const [runtime, n] of Object.entries(s.pools)) this.set({ host, runtime }, n);
    });
    gauge(r, WORKER_METRICS.poolTarget, function (this: Gauge<'host' | 'runtime'>) {
      const s = src()?.stats();
      if (s) this.set({ host, runtime: poolRuntime }, s.poolTarget);
    });
  }

  /** Where the gauges read from; until then they are absent. */
  attach(source: WorkerGaugeSource): void {
    this.source = source;
  }

  /**
   * A VM took a call: how it was obtained and how long that took, and how long
   * the call waited since the gateway accepted it (`receivedAt`, ms since epoch).
   */
  callStarted(call: { functionName: string; runtime: string; start: StartKind; startSeconds: number; receivedAt: number }, now = Date.now()): void {
    this.vmStart.observe({ host: this.hostId, runtime: call.runtime, kind: vmStartKindLabel(call.start) }, Math.max(0, call.startSeconds));
    if (call.start === 'warm') this.warmStarts.inc({ function_name: call.functionName });
    else this.coldStarts.inc({ function_name: call.functionName });
    // Clocks of two hosts: a small negative skew is clamped to 0.
    this.waitSeconds.observe({ function_name: call.functionName }, Math.max(0, (now - call.receivedAt) / 1000));
  }

  /** A pool refill finished (VmManagerOptions.onRefill). */
  refilled(r: { seconds: number; ok: boolean }): void {
    const labels = { host: this.hostId, runtime: this.poolRuntime };
    if (r.ok) {
      this.refills.inc(labels);
      this.refillSeconds.observe(labels, r.seconds);
    } else {
      this.refillFailures.inc(labels);
    }
  }

  /** An idle warm VM was paged out (VmManagerOptions.onReclaim). */
  reclaimed(bytes: number): void {
    this.reclaims.inc({ host: this.hostId });
    this.reclaimedBytes.inc({ host: this.hostId }, bytes);
  }
}
