/**
 * Hosts and VMs: per worker host (GET /system/hosts, from heartbeats and the
 * workers' metrics, polled every second) its VMs by state, memory budget, pools,
 * warm functions and snapshots; live charts over the last two minutes of VMs by
 * state, VM starts per second by kind (and pool refills: VMs booted or cloned
 * ahead), and the mean start latency of each kind. The history of a host is kept
 * while the console is open, across page changes.
 */
import { ApiError, getJson } from '../api.js';
import { clear, h, table } from '../dom.js';
import { liveChart, type LiveChart } from '../chart.js';
import { startRates, type StartReading } from '../stats.js';
import { VM_START_KINDS, type HostInfo } from '../types.js';

const HISTORY_S = 120;
const STATES = ['booting', 'pool', 'warm', 'busy'];
const SERIES: string[] = [...VM_START_KINDS, 'refill'];

interface Point {
  t: number;
  vms: Record<string, number>;
  rates: ReturnType<typeof startRates>;
}
/** Per host, kept while the console is open (so coming back to the page shows the last two minutes). */
const histories = new Map<string, { points: Point[]; last?: StartReading }>();

interface HostPanel {
  root: HTMLElement;
  facts: HTMLElement;
  vmChart: LiveChart;
  startChart: LiveChart;
  latencyChart: LiveChart;
}

export function hostsPage(main: HTMLElement): () => void {
  const summary = h('div', { id: 'hosts-summary', 'aria-live': 'polite' }, 'Waiting for heartbeats…');
  const panels = new Map<string, HostPanel>();
  const container = h('div', { class: 'hosts' });

  function panel(hostId: string): HostPanel {
    let p = panels.get(hostId);
    if (p) return p;
    const facts = h('div', {});
    const vmChart = liveChart(`VMs by state on ${hostId}`, STATES, { stepped: true, yLabel: 'VMs', windowS: HISTORY_S });
    const startChart = liveChart(`VM starts per second on ${hostId}`, SERIES, { yLabel: 'starts/s', windowS: HISTORY_S });
    const latencyChart = liveChart(`Mean VM start latency on ${hostId}`, SERIES, { yLabel: 'ms', points: true, windowS: HISTORY_S });
    const root = h('section', { class: 'card host', 'aria-label': `Host ${hostId}`, 'data-host': hostId }, h('h2', {}, `Host ${hostId}`), facts, h('div', { class: 'charts' }, vmChart.el, startChart.el, latencyChart.el),
      h('p', { class: 'note' }, 'boot, pool, clone, snapshot, unpause: how calls got their VM (unpause: the function’s paused warm VM); refill: VMs made ahead for the pool. From the worker’s metrics, read every second.'),
    );
    p = { root, facts, vmChart, startChart, latencyChart };
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
      let hist = histories.get(x.hostId);
      if (!hist) histories.set(x.hostId, (hist = { points: [] }));
      const reading: StartReading | undefined = x.starts ? { atMs: Date.now(), starts: x.starts } : undefined;
      const rates = reading && hist.last ? startRates(hist.last, reading) : {};
      if (reading) hist.last = reading;
      if (hist.points.at(-1)?.t === now) hist.points.pop();
      hist.points.push({ t: now, vms: { ...x.vms }, rates });
      while (hist.points.length && hist.points[0]!.t < now - HISTORY_S) hist.points.shift();
      const points = hist.points;
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
          h('dt', {}, 'VM starts so far'),
          h(
            'dd',
            { 'data-starts': x.hostId },
            x.starts
              ? SERIES.filter((k) => x.starts![k]?.count)
                  .map((k) => `${k} ${x.starts![k]!.count}`)
                  .join(', ') || 'none'
              : (x.startsError ?? '–'),
          ),
        ),
      );
      const xs = points.map((e) => e.t);
      p.vmChart.set(xs, STATES.map((s) => points.map((e) => e.vms[s] ?? 0)));
      p.startChart.set(xs, SERIES.map((k) => points.map((e) => e.rates[k]?.perSecond ?? 0)));
      p.latencyChart.set(xs, SERIES.map((k) => points.map((e) => e.rates[k]?.meanMs ?? null)));
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

  main.append(summary, container);
  void tick();
  const t1 = setInterval(() => void tick(), 1000);
  return () => {
    clearInterval(t1);
    for (const p of panels.values()) {
      p.vmChart.destroy();
      p.startChart.destroy();
      p.latencyChart.destroy();
    }
  };
}
