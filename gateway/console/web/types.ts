/** The shapes the console reads from the API (see contracts/ for their definitions). */
export type StartKind = 'cold' | 'pool' | 'clone' | 'snapshot' | 'warm';
export const START_KINDS: StartKind[] = ['cold', 'pool', 'clone', 'snapshot', 'warm'];
/** The `kind` label of the workers' mayfly_vm_start_seconds (contracts/metrics.ts, vmStartKindLabel). */
export const VM_START_KINDS = ['boot', 'pool', 'clone', 'snapshot', 'unpause'] as const;
export const CALL_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled'] as const;

export interface FunctionInfo {
  name: string;
  runtime: string;
  isolation: 'per-request' | 'per-function';
  version: number;
  handler: string;
  /** e.g. "128Mi". */
  memory: string;
  /** Milliseconds. */
  timeout: number;
  invocationCount: number;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  updatedAt: string;
}

export interface CallRecord {
  callId: string;
  function: string;
  mode: 'sync' | 'async';
  status: (typeof CALL_STATUSES)[number];
  attempts: number;
  statusCode?: number;
  result?: unknown;
  error?: string;
  logs: Array<{ stream: 'stdout' | 'stderr'; line: string }>;
  queuedAt: string;
  startedAt?: string;
  endedAt?: string;
  start?: StartKind;
  hostId?: string;
}

export interface HostInfo {
  hostId: string;
  sentAt: number;
  ageMs: number;
  memoryBudgetMiB: number;
  memoryReservedMiB: number;
  inflight: number;
  vms: Record<string, number>;
  warm: string[];
  pools: Record<string, number>;
  snapshots: string[];
  /** VM start counters from the worker's metrics: per start kind and `refill`. */
  starts?: Record<string, { count: number; sumSeconds: number }>;
  startsError?: string;
}

export interface Session {
  authEnabled: boolean;
  principal: { kind: 'admin'; user: string } | { kind: 'token'; id: string; name: string } | null;
  csrf: string | null;
}
