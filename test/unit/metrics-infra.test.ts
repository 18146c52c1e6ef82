/**
 * The shipped Prometheus config and Grafana files: the config is valid for
 * promtool and points at the platform's default targets file; rendering it for
 * another targets file works; the dashboard's PromQL parses (promtool check
 * rules) and uses only metrics Mayfly declares. The e2e test runs the same
 * expressions against a live Prometheus.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { GATEWAY_METRICS, QUEUE_METRICS, SCHEDULER_METRICS, TRIGGER_METRICS, WORKER_METRICS, type MetricDef } from '../../contracts/metrics.js';
import { createRegistry } from '../../lib/metrics.js';
import { renderPrometheusConfig, SHIPPED_PROMETHEUS_CONFIG } from '../../lib/prometheus-server.js';
import { prometheusSdFile } from '../../lib/prometheus-sd.js';

const GRAFANA = path.join(PROJECT_ROOT, 'infra', 'grafana');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mfinfra-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function promtool(args: string[]): { ok: boolean; out: string } {
  try {
    return { ok: true, out: execFileSync('promtool', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString() };
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    return { ok: false, out: `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}` };
  }
}

describe('infra/prometheus/prometheus.yml', () => {
  const shipped = fs.readFileSync(SHIPPED_PROMETHEUS_CONFIG, 'utf8');

  it('is valid and reads the targets file `npm start` writes by default', () => {
    const r = promtool(['check', 'config', SHIPPED_PROMETHEUS_CONFIG]);
    expect(r.ok, r.out).toBe(true);
    const entry = /^\s*- files:\s*\n\s*- (.+)$/m.exec(shipped)![1]!.trim();
    expect(path.resolve(path.dirname(SHIPPED_PROMETHEUS_CONFIG), entry)).toBe(
      prometheusSdFile({ MAYFLY_DATA_DIR: path.join(PROJECT_ROOT, '.data'), MAYFLY_PROMETHEUS_SD_FILE: undefined }),
    );
  });

  it('renders for another targets file and scrape interval, still valid', () => {
    const sdFile = path.join(tmp, 'dir with space', 'targets.json');
    fs.mkdirSync(path.dirname(sdFile), { recursive: true });
    fs.writeFileSync(sdFile, '[]\n');
    const text = renderPrometheusConfig(shipped, { sdFile, scrapeInterval: '1s', refreshInterval: '2s' });
    expect(text).toContain(`- ${JSON.stringify(sdFile)}`);
    expect(text).toMatch(/^\s*scrape_interval: 1s$/m);
    expect(text).toMatch(/^\s*scrape_timeout: 800ms$/m);
    expect(text).toMatch(/^\s*evaluation_interval: 1s$/m);
    expect(text).toMatch(/^\s*refresh_interval: 2s$/m);
    expect(text.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n')).not.toContain('../../.data');
    const file = path.join(tmp, 'rendered.yml');
    fs.writeFileSync(file, text);
    const r = promtool(['check', 'config', file]);
    expect(r.ok, r.out).toBe(true);
    expect(r.out).not.toContain('WARNING');
  });

  it('refuses a template it cannot render, and a bad interval', () => {
    expect(() => renderPrometheusConfig('global: {}\n', { sdFile: '/x' })).toThrow(/files entry/);
    expect(() => renderPrometheusConfig(shipped, { sdFile: '/x', scrapeInterval: 'often' })).toThrow(/interval/);
  });
});

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Array<{ expr: string; refId: string; datasource?: { uid: string } }>;
}
const dashboard = JSON.parse(fs.readFileSync(path.join(GRAFANA, 'dashboards', 'mayfly.json'), 'utf8')) as {
  uid: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; allValue?: string; current?: { value: unknown } }> };
};
const substitute = (e: string) => e.replaceAll('$__rate_interval', '1m').replaceAll('$function', '.*').replaceAll('$host', '.*');
const targets = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p, ...t })));

describe('infra/grafana', () => {
  it('dashboard: unique ids, every panel on the datasource variable, variables with an All value', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets!.length, p.title).toBeGreaterThan(0);
      expect(new Set(p.targets!.map((t) => t.refId)).size).toBe(p.targets!.length);
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
    const vars = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    expect(vars.datasource!.type).toBe('datasource');
    expect(vars.function).toMatchObject({ type: 'query', allValue: '.*' });
    expect(vars.host).toMatchObject({ type: 'query', allValue: '.*' });
  });

  it('dashboard: panels do not overlap', () => {
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
          const key = `${x},${y}`;
          expect(cells.has(key), `${p.title} overlaps at ${key}`).toBe(false);
          cells.add(key);
        }
      }
    }
  });

  it('dashboard: the panels the issue asks for are there', () => {
    const exprs = targets.map((t) => t.expr).join('\n');
    for (const needle of [
      'rate(gateway_function_invocation_total', // invocations/s
      'code!~"2.."', // errors
      'histogram_quantile(0.99, sum by (le) (rate(gateway_functions_seconds_bucket', // latency percentiles
      'mayfly_cold_starts_total',
      'mayfly_warm_starts_total',
      'mayfly_vm_start_seconds_bucket', // VM start time by kind
      'sum by (host, state) (mayfly_vms', // VMs by state per host
      'mayfly_queue_pending', // queue depth
      'mayfly_host_memory_free_bytes', // host memory
      'mayfly_trigger_messages_total', // triggers (issue 15)
      'mayfly_trigger_calls_finished_total',
      'mayfly_trigger_lag_messages',
    ]) {
      expect(exprs).toContain(needle);
    }
  });

  it('dashboard: every expression parses (promtool check rules) and uses declared metrics only', () => {
    const rules = ['groups:', '  - name: dashboard', '    rules:'];
    targets.forEach((t, i) => {
      rules.push(`      - record: mayfly:dashboard:${i}`, `        expr: ${JSON.stringify(substitute(t.expr))}`);
    });
    const file = path.join(tmp, 'dashboard-rules.yml');
    fs.writeFileSync(file, `${rules.join('\n')}\n`);
    const r = promtool(['check', 'rules', file]);
    expect(r.ok, r.out).toBe(true);

    const declared = new Set<string>(['up']);
    for (const d of [GATEWAY_METRICS, QUEUE_METRICS, SCHEDULER_METRICS, WORKER_METRICS, TRIGGER_METRICS].flatMap((g) => Object.values(g) as MetricDef[])) {
      declared.add(d.name);
      if (d.type === 'histogram') for (const s of ['_bucket', '_count', '_sum']) declared.add(d.name + s);
    }
    for (const m of createRegistry().getMetricsAsArray()) declared.add((m as unknown as { name: string }).name);
    for (const t of targets) {
      // (mayfly_id is a target label of the discovery, not a metric)
      for (const name of (t.expr.match(/\b(?:gateway|mayfly|process|nodejs)_[a-z0-9_]+\b|\bup\b/g) ?? []).filter((n) => n !== 'mayfly_id')) {
        expect(declared.has(name), `${t.panel.title}: ${name}`).toBe(true);
      }
    }
  });

  it('provisioning: the datasource the dashboard selects, and a dashboards provider', () => {
    const ds = fs.readFileSync(path.join(GRAFANA, 'provisioning', 'datasources', 'mayfly.yml'), 'utf8');
    expect(ds).toMatch(/^\s*uid: mayfly-prometheus$/m);
    expect(ds).toMatch(/^\s*type: prometheus$/m);
    expect(ds).toMatch(/^\s*url: http:\/\/127\.0\.0\.1:9090$/m);
    const current = dashboard.templating.list.find((v) => v.name === 'datasource')!.current as { value: string };
    expect(current.value).toBe('mayfly-prometheus');
    const provider = fs.readFileSync(path.join(GRAFANA, 'provisioning', 'dashboards', 'mayfly.yml'), 'utf8');
    expect(provider).toMatch(/^\s*type: file$/m);
    expect(provider).toMatch(/^\s*path: \/var\/lib\/grafana\/dashboards\/mayfly$/m);
  });
});
