/**
 * Hosts and VMs: per worker host (GET /system/hosts, from heartbeats, polled
 * every second) its VMs by state, memory budget, pools, warm functions and
 * snapshots; charts of VMs by state over the last two minutes, and of VM starts
 * per second by kind with the median call duration (from call records).
 */
import { ApiError, getJson } from '../api.js';
import { clear, h, table } from '../dom.js';
import { liveChart, type LiveChart } from '../chart.js';
import { medianDurationPerSecond, startsPerSecond } from '../stats.js';
import { START_KINDS, type CallRecord, type HostInfo } from '../types.js';

const HISTORY_S = 120;
const STATES = ['booting', 'pool', 'warm', 'busy'];

interface HostPanel {
  root: HTMLElement;
  facts: HTMLElement;
  vmChart: LiveChart;
  startChart: LiveChart;
  latencyChart: LiveChart;
  history: Array<{ t: number; vms: Record<string, number> }>;
}

export function hostsPage(main: HTMLElement): () => void {
  const summary = h('div', { id: 'hosts-summary', 'aria-live': 'polite' }, 'Waiting for heartbeats…');
  const panels = new Map<string, HostPanel>();
  const container = h('div', { class: 'hosts' });
  let records: CallRecord[] = [];

  function panel(hostId: string): HostPanel {
    let p = panels.get(hostId);
    if (p) return p;
    const facts = h('div', {});
    const vmChart = liveChart(`VMs by state on ${hostId}`, STATES, { stepped: true, yLabel: 'VMs' });
    const startChart = liveChart(`VM starts per second on ${hostId}`, START_KINDS, { yLabel: 'starts/s' });
    const latencyChart = liveChart(`Median call duration on ${hostId}`, ['median ms'], { yLabel: 'ms', points: true });
    const root = h('section', { class: 'card host', 'aria-label': `Host ${hostId}`, 'data-host': hostId }, h('h2', {}, `Host ${hostId}`), facts, h('div', { class: 'charts' }, vmChart.el, startChart.el, latencyChart.el));
    p = { root, facts, vmChart, startChart, latencyChart, history: [] };
    panels.set(hostId, p);
    container.append(root);
    return p;
  }

  function render(hosts: HostInfo[]): void {
    const now = Math.floor(Date.now() / 1000);
    clear(summary);
    if (!hosts.length) summary.append(h('p', {}, 'No worker host is sending heartbeats.'));
    else
      summary.append(
        table(
          'Hosts',
          ['Host', ...STATES, 'In flight', 'Memory used', 'Heartbeat'],
          hosts.map((x) => [
            x.hostId,
            ...STATES.map((s) => h('span', { 'data-host': x.hostId, 'data-state': s }, x.vms[s] ?? 0)),
            x.inflight,
            `${x.memoryReservedMiB} / ${x.memoryBudgetMiB} MiB`,
            `${Math.round(x.ageMs)} ms ago`,
          ]),
          { id: 'hosts-table' },
        ),
      );
    for (const [id, p] of panels) {
      if (!hosts.some((x) => x.hostId === id)) {
        p.vmChart.destroy();
        p.startChart.destroy();
        p.latencyChart.destroy();
        p.root.remove();
        panels.delete(id);
      }
    }
    for (const x of hosts) {
      const p = panel(x.hostId);
      p.history.push({ t: now, vms: { ...x.vms } });
      while (p.history.length && p.history[0]!.t < now - HISTORY_S) p.history.shift();
      clear(p.facts);
      const used = x.memoryBudgetMiB ? x.memoryReservedMiB / x.memoryBudgetMiB : 0;
      const pools = Object.entries(x.pools).map(([rt, n]) => `${rt}: ${n}`).join(', ') || '–';
      p.facts.append(
        h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'Memory budget'),
          h('dd', {}, h('meter', { min: 0, max: 1, value: used, 'aria-label': 'memory used' }), ` ${x.memoryReservedMiB} of ${x.memoryBudgetMiB} MiB reserved`),
          h('dt', {}, 'Pools (pre-booted, paused)'),
          h('dd', {}, pools),
          h('dt', {}, 'Warm functions (paused between calls)'),
          h('dd', {}, x.warm.join(', ') || '–'),
          h('dt', {}, 'Function snapshots'),
          h('dd', {}, x.snapshots.join(', ') || '–'),
        ),
      );
      p.vmChart.set(
        p.history.map((e) => e.t),
        STATES.map((s) => p.history.map((e) => e.vms[s] ?? 0)),
      );
      const from = now - HISTORY_S;
      const xs = Array.from({ length: HISTORY_S + 1 }, (_, i) => from + i);
      const starts = startsPerSecond(records, from, now, x.hostId);
      p.startChart.set(xs, START_KINDS.map((k) => starts[k]));
      p.latencyChart.set(xs, [medianDurationPerSecond(records, from, now, x.hostId)]);
    }
  }

  let busy = false;
  async function tick(): Promise<void> {
    if (busy) return;
    busy = true;
    try {
      render(await getJson<HostInfo[]>('/system/hosts'));
    } catch (err) {
      clear(summary);
      summary.append(h('p', { class: 'error' }, `${(err as ApiError).code ?? 'ERROR'}: ${(err as Error).message}`));
    } finally {
      busy = false;
    }
  }
  async function loadRecords(): Promise<void> {
    try {
      records = await getJson<CallRecord[]>('/system/invocations?limit=1000');
    } catch {
      // the VM chart still works; the error shows on the next tick if it persists
    }
  }

  main.append(summary, container);
  void loadRecords().then(tick);
  const t1 = setInterval(() => void tick(), 1000);
  const t2 = setInterval(() => void loadRecords(), 2000);
  return () => {
    clearInterval(t1);
    clearInterval(t2);
    for (const p of panels.values()) {
      p.vmChart.destroy();
      p.startChart.destroy();
      p.latencyChart.destroy();
    }
  };
}
