/**
 * Every Prometheus metric Mayfly exports, by service, declared here and nowhere
 * else (lib/metrics.ts turns a definition into a prom-client metric), plus the
 * bus message services use to announce their /metrics address for discovery.
 *
 * Conventions: base units (seconds, bytes), counters end in `_total` except the
 * OpenFaaS names kept for its dashboards. `host` is the worker's MAYFLY_HOST_ID;
 * Prometheus adds `job`, `instance` and the discovery label `service`.
 *
 * Where each is counted:
 *   gateway    gateway_* of sync calls (per request), gateway_function_invocation_started
 *              and mayfly_queue_submitted_total of accepted async calls (202, not duplicates)
 *   scheduler  gateway_function_invocation_total / gateway_functions_seconds of async calls
 *              when their final result is recorded (so sum() over jobs counts every call once),
 *              queue processed/retried/dead, sampled queue depth, placements, hosts alive
 *   worker     VM lifecycle, pools, host memory, starts, invocation wait
 * Every service also exports prom-client's default process metrics.
 */
import { z } from 'zod';
import type { StartKind } from './bus.js';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'untyped';

export interface MetricDef {
  name: string;
  help: string;
  type: MetricType;
  labelNames: readonly string[];
  buckets?: readonly number[];
}

/** Invocation durations, seconds. Beyond OpenFaaS's defaults (10s): cold VM starts under TCG take seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300] as const;
/** VM starts: an unpause takes about a millisecond, a TCG cold boot several seconds. */
export const VM_START_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;
/** Placement: one NATS round trip when a host accepts, up to MAYFLY_PLACEMENT_TIMEOUT_MS when none does. */
export const PLACEMENT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

const def = <const D extends MetricDef>(d: D): D => d;

/** OpenFaaS gateway names and labels, so its dashboards work unchanged. */
export const GATEWAY_METRICS = {
  invocationTotal: def({
    name: 'gateway_function_invocation_total',
    help: 'Finished function invocations by HTTP status code (sync: counted by the gateway; async: by the scheduler when the final result is recorded)',
    type: 'counter',
    labelNames: ['function_name', 'code'],
  }),
  functionSeconds: def({
    name: 'gateway_functions_seconds',
    help: 'Invocation duration in seconds (sync: gateway accepted the request until the result; async: the final attempt, placement included)',
    type: 'histogram',
    labelNames: ['function_name', 'code'],
    buckets: DURATION_BUCKETS,
  }),
  /** A gauge under OpenFaaS's name, which ends in `_count`; exposed as `untyped` for promtool. */
  serviceCount: def({
    name: 'gateway_service_count',
    help: 'Deployed functions (1 per function: functions scale from zero, every call gets its VM)',
    type: 'untyped',
    labelNames: ['function_name'],
  }),
  /**
   * A counter under OpenFaaS's name, which lacks `_total`; exposed as `untyped`
   * so the text passes `promtool check metrics` while keeping the name.
   */
  invokeRoutes: def({
    name: 'mayfly_gateway_invoke_routes_total',
    help: 'Sync calls by how they reached a worker: direct (one hop to a worker holding a VM or snapshot of the version) or placed (by the scheduler)',
    type: 'counter',
    labelNames: ['route'],
  }),
  invocationStarted: def({
    name: 'gateway_function_invocation_started',
    help: 'Function invocations handed to the platform: sync requests and accepted async calls (monotonic counter)',
    type: 'untyped',
    labelNames: ['function_name'],
  }),
} as const;

/** The async work queue (JetStream), per function where the queue can tell. */
export const QUEUE_METRICS = {
  submitted: def({
    name: 'mayfly_queue_submitted_total',
    help: 'Async calls accepted into the queue (202; a repeated call id is not counted)',
    type: 'counter',
    labelNames: ['function_name'],
  }),
  processed: def({
    name: 'mayfly_queue_processed_total',
    help: 'Async calls the scheduler finished, by final status (succeeded, failed, dead)',
    type: 'counter',
    labelNames: ['function_name', 'status'],
  }),
  retried: def({
    name: 'mayfly_queue_retried_total',
    help: 'Async call attempts put back in the queue to be tried again',
    type: 'counter',
    labelNames: ['function_name'],
  }),
  dead: def({
    name: 'mayfly_queue_dead_total',
    help: 'Async calls that used up their attempts (status dead)',
    type: 'counter',
    labelNames: ['function_name'],
  }),
  /**
   * Sampled from the durable consumer when scraped. The work queue has one
   * subject, so depth is not split by function; every scheduler replica reports
   * the same value: aggregate with max(), not sum().
   */
  pending: def({
    name: 'mayfly_queue_pending',
    help: 'Async calls in the queue not yet finished: waiting (consumer num_pending) or being run (num_ack_pending)',
    type: 'gauge',
    labelNames: ['state'],
  }),
  inflight: def({
    name: 'mayfly_queue_inflight',
    help: 'Async calls this scheduler replica is running now, per function',
    type: 'gauge',
    labelNames: ['function_name'],
  }),
} as const;

export const SCHEDULER_METRICS = {
  placements: def({
    name: 'mayfly_placements_total',
    help: 'Placement decisions by reason: warm (idle warm VM), pool (pre-booted VM), memory (most free memory), none (no host took the call)',
    type: 'counter',
    labelNames: ['reason'],
  }),
  placementSeconds: def({
    name: 'mayfly_placement_seconds',
    help: 'Time from a call reaching the scheduler to a host accepting it (or the scheduler giving up), seconds',
    type: 'histogram',
    labelNames: ['reason'],
    buckets: PLACEMENT_BUCKETS,
  }),
  hostsAlive: def({
    name: 'mayfly_hosts_alive',
    help: 'Worker hosts whose last heartbeat is younger than MAYFLY_HOST_TTL_MS',
    type: 'gauge',
    labelNames: [],
  }),
} as const;

export const WORKER_METRICS = {
  vmStartSeconds: def({
    name: 'mayfly_vm_start_seconds',
    help: 'Time to get a VM running the function for a call, seconds, by kind: boot (cold boot), pool (pre-booted VM), clone (template clone), unpause (warm VM)',
    type: 'histogram',
    labelNames: ['host', 'runtime', 'kind'],
    buckets: VM_START_BUCKETS,
  }),
  vms: def({
    name: 'mayfly_vms',
    help: 'VMs on this host by state: booting (pool refill), pool (ready, paused), warm (idle, paused), busy (serving a call)',
    type: 'gauge',
    labelNames: ['host', 'state'],
  }),
  coldStarts: def({
    name: 'mayfly_cold_starts_total',
    help: 'Calls that had no warm VM of their function and started it in a fresh VM (pool, clone or boot)',
    type: 'counter',
    labelNames: ['function_name'],
  }),
  warmStarts: def({
    name: 'mayfly_warm_starts_total',
    help: 'Calls served by unpausing an idle warm VM of their function',
    type: 'counter',
    labelNames: ['function_name'],
  }),
  invocationWaitSeconds: def({
    name: 'mayfly_invocation_wait_seconds',
    help: 'Time from the gateway accepting a call (async: submitting it) to a VM taking it, seconds (clocks of two hosts)',
    type: 'histogram',
    labelNames: ['function_name'],
    buckets: DURATION_BUCKETS,
  }),
  inflight: def({
    name: 'mayfly_worker_inflight',
    help: 'Calls this worker has accepted and not finished',
    type: 'gauge',
    labelNames: ['host'],
  }),
  memoryBudget: def({
    name: 'mayfly_host_memory_budget_bytes',
    help: 'Guest RAM this worker may hand out (MAYFLY_MEMORY_BUDGET_MB)',
    type: 'gauge',
    labelNames: ['host'],
  }),
  memoryReserved: def({
    name: 'mayfly_host_memory_reserved_bytes',
    help: 'Guest RAM reserved by VMs (pool, warm, busy, booting) and admitted calls',
    type: 'gauge',
    labelNames: ['host'],
  }),
  memoryFree: def({
    name: 'mayfly_host_memory_free_bytes',
    help: 'Guest RAM budget not reserved: what admission can still hand out',
    type: 'gauge',
    labelNames: ['host'],
  }),
  poolReady: def({
    name: 'mayfly_pool_ready',
    help: 'Pre-booted paused VMs ready per runtime',
    type: 'gauge',
    labelNames: ['host', 'runtime'],
  }),
  poolTarget: def({
    name: 'mayfly_pool_target',
    help: 'Pool size the worker keeps per runtime (arrival rate x refill time, between MAYFLY_POOL_SIZE and MAYFLY_POOL_MAX)',
    type: 'gauge',
    labelNames: ['host', 'runtime'],
  }),
  poolRefills: def({
    name: 'mayfly_pool_refills_total',
    help: 'VMs added to the pool',
    type: 'counter',
    labelNames: ['host', 'runtime'],
  }),
  poolRefillFailures: def({
    name: 'mayfly_pool_refill_failures_total',
    help: 'Pool refills that failed (the VM could not be made or paused)',
    type: 'counter',
    labelNames: ['host', 'runtime'],
  }),
  poolRefillSeconds: def({
    name: 'mayfly_pool_refill_seconds',
    help: 'Time to make one pool VM (clone or boot, then pause), seconds',
    type: 'histogram',
    labelNames: ['host', 'runtime'],
    buckets: VM_START_BUCKETS,
  }),
  vmReclaimedBytes: def({
    name: 'mayfly_vm_reclaimed_bytes_total',
    help: 'Memory idle paused warm VMs gave back to the host (paged out to swap, MAYFLY_IDLE_RECLAIM_MS), bytes',
    type: 'counter',
    labelNames: ['host'],
  }),
  vmReclaims: def({
    name: 'mayfly_vm_reclaims_total',
    help: 'Idle paused warm VMs paged out (MAYFLY_IDLE_RECLAIM_MS)',
    type: 'counter',
    labelNames: ['host'],
  }),
} as const;

/**
 * Triggers (scheduler/triggers/), counted by the scheduler replica that did
 * the work. `trigger` is `subject:<pattern>` (the function's topic subject that
 * matched) or `schedule`. Finished calls are counted when their final record is
 * written, like mayfly_queue_processed_total.
 */
export const TRIGGER_METRICS = {
  messages: def({
    name: 'mayfly_trigger_messages_total',
    help: 'Messages taken from the trigger capture stream, by subject pattern that matched (`none`: no function matched any more)',
    type: 'counter',
    labelNames: ['trigger'],
  }),
  started: def({
    name: 'mayfly_trigger_invocations_total',
    help: 'Async calls queued by a trigger (a message for one function, or a schedule tick; a repeated Nats-Msg-Id or tick is not counted)',
    type: 'counter',
    labelNames: ['trigger', 'function_name'],
  }),
  rejected: def({
    name: 'mayfly_trigger_rejected_total',
    help: 'Trigger messages recorded failed without a call, by reason (too_large)',
    type: 'counter',
    labelNames: ['trigger', 'function_name', 'reason'],
  }),
  finished: def({
    name: 'mayfly_trigger_calls_finished_total',
    help: 'Trigger calls that got their final record, by status (succeeded, failed, dead, cancelled)',
    type: 'counter',
    labelNames: ['trigger', 'function_name', 'status'],
  }),
  /** Sampled from the durable consumer when scraped; every replica reports the same value: aggregate with max(). */
  lag: def({
    name: 'mayfly_trigger_lag_messages',
    help: 'Captured messages not yet mapped to calls: waiting (consumer num_pending) or being mapped (num_ack_pending)',
    type: 'gauge',
    labelNames: ['state'],
  }),
  nextFire: def({
    name: 'mayfly_schedule_next_fire_timestamp_seconds',
    help: 'Next tick of each scheduled function (Unix time, seconds)',
    type: 'gauge',
    labelNames: ['function_name'],
  }),
} as const;

/** The `kind` label of mayfly_vm_start_seconds for how a call's VM was obtained. */
export type VmStartKindLabel = 'boot' | 'pool' | 'clone' | 'snapshot' | 'unpause';

export function vmStartKindLabel(kind: StartKind): VmStartKindLabel {
  switch (kind) {
    case 'cold':
      return 'boot';
    case 'warm':
      return 'unpause';
    default:
      return kind;
  }
}

/** Placement reasons of mayfly_placements_total. */
export type PlacementReasonLabel = 'warm' | 'snapshot' | 'pool' | 'memory' | 'none';

// ---- discovery ----

export const METRICS_SUBJECTS = {
  /**
   * Gateways and schedulers announce their /metrics address here every
   * MAYFLY_HEARTBEAT_MS (workers put theirs in the heartbeat, `metricsUrl`).
   * The scheduler writes the Prometheus file_sd targets file from both.
   */
  announce: 'mayfly.metrics.announce',
} as const;

export const metricsServiceSchema = z.enum(['gateway', 'scheduler', 'worker']);
export type MetricsService = z.infer<typeof metricsServiceSchema>;

export const metricsAnnouncementSchema = z.object({
  service: metricsServiceSchema,
  /** Stable name of the process: host id for workers, `<service>-<hostname>-<pid>` otherwise. */
  id: z.string().min(1).max(128),
  /** Full URL of its /metrics, e.g. http://10.0.0.5:9464/metrics. */
  url: z.string().url(),
  sentAt: z.number(),
});
export type MetricsAnnouncement = z.infer<typeof metricsAnnouncementSchema>;
