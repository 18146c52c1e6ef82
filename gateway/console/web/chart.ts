/** A live line chart over time (uPlot), sized to its container and resized with the window. */
import uPlot from 'uplot';

export const COLORS = ['#2563eb', '#16a34a', '#d97706', '#dc2626', '#7c3aed', '#0891b2', '#db2777'];

export interface LiveChart {
  el: HTMLElement;
  set(xs: number[], ys: Array<Array<number | null>>): void;
  destroy(): void;
}

export function liveChart(title: string, labels: string[], opts: { stepped?: boolean; points?: boolean; yLabel?: string; windowS?: number } = {}): LiveChart {
  const el = document.createElement('figure');
  el.className = 'chart';
  el.setAttribute('aria-label', title);
  const width = () => Math.max(240, el.clientWidth || (el.parentElement?.clientWidth ?? 600));
  let u: uPlot | null = null;
  let pending: uPlot.AlignedData = [[], ...labels.map(() => [])];

  const make = () => {
    u = new uPlot(
      {
        title,
        width: width(),
        height: 200,
        scales: {
          x: { time: true, ...(opts.windowS ? { range: (_u: uPlot, _min: number, max: number): uPlot.Range.MinMax => [max - opts.windowS!, max] } : {}) },
          y: { range: (_u, _min, max) => [0, Math.max(1, Math.ceil(max * 1.1))] } },
        axes: [{}, { label: opts.yLabel ?? '', size: 50 }],
        series: [
          {},
          ...labels.map((label, i) => ({
            label,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            ...(opts.points ? { points: { show: true, size: 6 } } : {}),
            ...(opts.stepped ? { paths: uPlot.paths.stepped!({ align: 1 }) } : {}),
          })),
        ],
      },
      pending,
      el,
    );
  };
  const onResize = () => u?.setSize({ width: width(), height: 200 });
  window.addEventListener('resize', onResize);

  return {
    el,
    set(xs, ys) {
      pending = [xs, ...ys] as uPlot.AlignedData;
      if (!u) {
        if (!el.isConnected) return;
        make();
      } else u.setData(pending);
    },
    destroy() {
      window.removeEventListener('resize', onResize);
      u?.destroy();
    },
  };
}
