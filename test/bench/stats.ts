/** Medians, p99s and ratios for benchmarks (ratios against a baseline from the same run: these machines are noisy). */

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[idx]!;
}

export function median(samples: number[]): number {
  return percentile(samples, 50);
}

export function mean(samples: number[]): number {
  return samples.length === 0 ? NaN : samples.reduce((a, b) => a + b, 0) / samples.length;
}

export interface Row {
  name: string;
  samples: number[];
}

export function row(name: string): Row {
  return { name, samples: [] };
}

const NAME_WIDTH = 50;

/**
 * One line per row: sample count, median and p99 in ms, and both as a ratio of
 * the baseline's median and p99 (the baseline is the first line).
 */
export function table(rows: Row[], baseline: Row): string {
  const base = percentile(baseline.samples, 50);
  const base99 = percentile(baseline.samples, 99);
  const lines = [
    `${'measure'.padEnd(NAME_WIDTH)} ${'n'.padStart(4)} ${'median ms'.padStart(10)} ${'p99 ms'.padStart(10)} ${'x base p50'.padStart(11)} ${'x base p99'.padStart(11)}`,
  ];
  for (const r of [baseline, ...rows]) {
    const med = percentile(r.samples, 50);
    const p99 = percentile(r.samples, 99);
    lines.push(
      `${r.name.padEnd(NAME_WIDTH)} ${String(r.samples.length).padStart(4)} ${med.toFixed(2).padStart(10)} ${p99
        .toFixed(2)
        .padStart(10)} ${(med / base).toFixed(2).padStart(11)} ${(p99 / base99).toFixed(2).padStart(11)}`,
    );
  }
  return lines.join('\n');
}

/** A plain table: the first column left-aligned, the others right-aligned. */
export function grid(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === 0 ? (c ?? '').padEnd(widths[i]!) : (c ?? '').padStart(widths[i]!))).join('  '))
    .join('\n');
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2);
}
