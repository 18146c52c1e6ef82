/** Medians, p99s and ratios for benchmarks (ratios against a baseline from the same run: these machines are noisy). */

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[idx]!;
}

export interface Row {
  name: string;
  samples: number[];
}

export function table(rows: Row[], baseline: Row): string {
  const base = percentile(baseline.samples, 50);
  const lines = [
    `${'measure'.padEnd(44)} ${'n'.padStart(4)} ${'median ms'.padStart(10)} ${'p99 ms'.padStart(10)} ${'x baseline'.padStart(11)}`,
  ];
  for (const r of [baseline, ...rows]) {
    const med = percentile(r.samples, 50);
    lines.push(
      `${r.name.padEnd(44)} ${String(r.samples.length).padStart(4)} ${med.toFixed(2).padStart(10)} ${percentile(r.samples, 99)
        .toFixed(2)
        .padStart(10)} ${(med / base).toFixed(2).padStart(11)}`,
    );
  }
  return lines.join('\n');
}
