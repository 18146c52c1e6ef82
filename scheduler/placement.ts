/**
 * Placement order (DESIGN.md): a host with an idle warm VM of this function →
 * a host with a snapshot of this function version (com.mayfly.snapshot) → a
 * host with a pre-booted VM of its runtime → the host with the most free
 * memory. Ties rotate, so equal hosts share the load. Pure: unit-testable.
 */
import type { Heartbeat } from '../contracts/bus.js';
import type { FunctionRecord } from '../contracts/functions.js';

export type PlacementReason = 'warm' | 'snapshot' | 'pool' | 'memory';

export interface Candidate {
  hostId: string;
  reason: PlacementReason;
}

export function rankHosts(
  hosts: Heartbeat[],
  fn: Pick<FunctionRecord, 'name' | 'version' | 'runtime' | 'isolation'>,
  rotation: number,
): Candidate[] {
  const key = `${fn.name}@${fn.version}`;
  const scored = hosts.map((h, i) => {
    const warm = fn.isolation === 'per-function' && h.warm.includes(key);
    const snapshot = (h.snapshots ?? []).includes(key);
    const pool = (h.pools[fn.runtime] ?? 0) > 0;
    const reason: PlacementReason = warm ? 'warm' : snapshot ? 'snapshot' : pool ? 'pool' : 'memory';
    const tier = { warm: 0, snapshot: 1, pool: 2, memory: 3 }[reason];
    return {
      hostId: h.hostId,
      reason,
      tier,
      free: h.memoryBudgetMiB - h.memoryReservedMiB,
      // Rotating tie-breaker: the same order of equal hosts is not reused call after call.
      spin: (i + rotation) % Math.max(1, hosts.length),
    };
  });
  // Among warm or pooled hosts any will do: rotate. Otherwise the most free memory wins.
  scored.sort((a, b) => a.tier - b.tier || (a.reason === 'memory' ? b.free - a.free : 0) || a.spin - b.spin);
  return scored.map(({ hostId, reason }) => ({ hostId, reason }));
}
