import { describe, expect, it } from 'vitest';
import type { Heartbeat } from '../../contracts/bus.js';
import { rankHosts } from '../../scheduler/placement.js';

function hb(hostId: string, o: Partial<Heartbeat> = {}): Heartbeat {
  return { hostId, sentAt: 0, memoryBudgetMiB: 4096, memoryReservedMiB: 0, inflight: 0, vms: {}, warm: [], pools: {}, snapshots: [], ...o };
}
const fn = { name: 'f', version: 3, runtime: 'node' as const, isolation: 'per-function' as const };

describe('rankHosts', () => {
  it('prefers a warm VM of this function version, then a pooled VM, then free memory', () => {
    const hosts = [
      hb('mem-rich', { memoryReservedMiB: 0 }),
      hb('mem-poor', { memoryReservedMiB: 3000 }),
      hb('pooled', { pools: { node: 1 }, memoryReservedMiB: 3500 }),
      hb('warm', { warm: ['f@3'], memoryReservedMiB: 4000 }),
      hb('old-version', { warm: ['f@2'] , memoryReservedMiB: 100 }),
    ];
    expect(rankHosts(hosts, fn, 0).map((c) => [c.hostId, c.reason])).toEqual([
      ['warm', 'warm'],
      ['pooled', 'pool'],
      ['mem-rich', 'memory'],
      ['old-version', 'memory'],
      ['mem-poor', 'memory'],
    ]);
  });

  it('does not use warm VMs for per-request functions', () => {
    const r = rankHosts([hb('a', { warm: ['f@3'] }), hb('b', { pools: { node: 2 } })], { ...fn, isolation: 'per-request' }, 0);
    expect(r[0]).toEqual({ hostId: 'b', reason: 'pool' });
  });

  it('prefers a host with a snapshot of this version over a pooled one, for either isolation', () => {
    const hosts = [hb('pooled', { pools: { node: 3 } }), hb('snap-old', { snapshots: ['f@2'] }), hb('snap', { snapshots: ['f@3'] })];
    for (const isolation of ['per-request', 'per-function'] as const) {
      expect(rankHosts(hosts, { ...fn, isolation }, 0).map((c) => [c.hostId, c.reason])).toEqual([
        ['snap', 'snapshot'],
        ['pooled', 'pool'],
        ['snap-old', 'memory'],
      ]);
    }
  });

  it('rotates among equal hosts', () => {
    const hosts = [hb('a', { pools: { node: 1 } }), hb('b', { pools: { node: 1 } })];
    const firsts = new Set([0, 1, 2, 3].map((r) => rankHosts(hosts, fn, r)[0]!.hostId));
    expect(firsts).toEqual(new Set(['a', 'b']));
  });
});
