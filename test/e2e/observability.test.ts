/**
 * Observability end to end, checked by a real Prometheus: the platform's real
 * processes (nats-server, scheduler, worker with QEMU VMs, gateway), Debian's
 * `prometheus` started with the shipped infra/prometheus/prometheus.yml (the
 * test's targets file, 1 s scrapes), a workload (sync per-request and
 * per-function calls, an error, async calls, one retried until dead), then:
 * counters per function through Prometheus's query API, the latency histogram
 * and VM start metrics, `promtool check metrics` on every service's /metrics,
 * every PromQL expression of the Grafana dashboard returning data, the
 * /system/logs NDJSON, and the call id on the log lines of a call.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallRecord } from '../../contracts/bus.js';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { freePort } from '../../infra/nats/nats-server.js';
import { startPrometheus, type PrometheusHandle } from '../../lib/prometheus-server.js';
import type { FileSdGroup } from '../../lib/prometheus-sd.js';
import { TestPlatform } from '../helpers/platform.js';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';

const DASHBOARD = path.join(PROJECT_ROOT, 'infra', 'grafana', 'dashboards', 'mayfly.json');

let p: TestPlatform;
let prom: PrometheusHandle | null = null;
let promDir = '';
const killPrometheusOnExit = () => {
  if (prom) {
    try {
      process.kill(prom.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
};

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(expr: string): Promise<Sample[]> {
  const res = await fetch(`${prom!.url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
  const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: Sample[] } };
  if (body.status !== 'success') throw new Error(`query ${expr} failed: ${body.error}`);
  if (body.data!.resultType !== 'vector') throw new Error(`query ${expr}: ${body.data!.resultType}, expected a vector`);
  return body.data!.result;
}

/** label value → sample value, for a query aggregated by one label. */
async function byLabel(expr: string, label: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const s of await query(expr)) out[s.metric[label] ?? ''] = Number(s.value[1]);
  return out;
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function targetGroups(): FileSdGroup[] {
  try {
    return JSON.parse(fs.readFileSync(p.metricsTargetsFile(), 'utf8')) as FileSdGroup[];
  } catch {
    return [];
  }
}

async function deploy(service: string, code: string, extra: Record<string, unknown> = {}): Promise<void> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, code, ...extra }),
  });
  expect(res.status).toBe(202);
}

async function call(name: string, body: string): Promise<Response> {
  const res = await fetch(`${p.gatewayUrl}/function/${name}`, { method: 'POST', body });
  await res.arrayBuffer();
  return res;
}

async function submit(name: string, body: string): Promise<string> {
  const res = await fetch(`${p.gatewayUrl}/async-function/${name}`, { method: 'POST', body });
  expect(res.status).toBe(202);
  return res.headers.get('x-call-id')!;
}

async function waitFinal(callId: string): Promise<CallRecord> {
  let r: CallRecord | null = null;
  await waitUntil(
    async () => {
      r = (await (await fetch(`${p.gatewayUrl}/system/invocations/${callId}`)).json()) as CallRecord;
      return ['succeeded', 'failed', 'dead', 'cancelled'].includes(r.status);
    },
    60_000,
    `call ${callId} to finish`,
  );
  return r!;
}

let syncCallId = '';

beforeAll(async () => {
  process.once('exit', killPrometheusOnExit);
  p = await TestPlatform.start({
    workers: 1,
    env: { MAYFLY_POOL_SIZE: '1', MAYFLY_ASYNC_RETRY_MIN_MS: '100', MAYFLY_ASYNC_RETRY_MAX_MS: '300' },
  });
  await p.waitForWorkers(['w1'], 1);
  // The scheduler writes every process's /metrics address into the targets file.
  await p.waitFor(
    () => ['gateway', 'scheduler', 'worker'].every((s) => targetGroups().some((g) => g.labels.service === s)),
    30_000,
    'gateway, scheduler and worker in the targets file',
  );
  promDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfprom-'));
  prom = await startPrometheus({
    dir: promDir,
    sdFile: p.metricsTargetsFile(),
    port: await freePort(),
    scrapeInterval: '1s',
    refreshInterval: '1s',
    logFile: path.join(promDir, 'prometheus.log'),
  });
  await waitUntil(async () => (await query('up{service!=""} == 1')).length === 3, 30_000, 'Prometheus to scrape the 3 targets');

  // The workload.
  await deploy('obs-req', `export const handler = async (e) => { console.log('req', e.body); return { got: e.body }; };`);
  await deploy('obs-fn', `let n = 0;\nexport const handler = async () => { n++; console.error('call', n); return { n }; };`, {
    isolation: 'per-function',
  });
  await deploy('obs-err', `export const handler = async () => { throw new Error('boom'); };`);
  await deploy('obs-async', `export const handler = async (e) => { console.log('async', e.body); return e.body; };`);
  await deploy('obs-flaky', `export const handler = async () => ({ statusCode: 503, body: 'later' });`, {
    annotations: {
      'com.openfaas.retry.attempts': '2',
      'com.openfaas.retry.codes': '503',
      'com.openfaas.retry.min_wait': '100ms',
      'com.openfaas.retry.max_wait': '200ms',
    },
  });
  for (let i = 0; i < 3; i++) {
    const r = await call('obs-req', `r${i}`);
    expect(r.status).toBe(200);
    syncCallId = r.headers.get('x-call-id')!;
  }
  const starts: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await call('obs-fn', '');
    expect(r.status).toBe(200);
    starts.push(r.headers.get('x-mayfly-start')!);
  }
  expect(starts.slice(1)).toEqual(['warm', 'warm']);
  expect((await call('obs-err', '')).status).toBe(500);
  expect((await waitFinal(await submit('obs-async', 'hello'))).status).toBe('succeeded');
  expect((await waitFinal(await submit('obs-flaky', 'x'))).status).toBe('dead');
  // Triggers (issue 15): a message on a subject, one above the body limit, and a schedule (yearly: it
  // only shows its next tick here; named trig-*, so the obs-* counts below are unchanged).
  await deploy('trig-topic', `export const handler = async (e) => e.body;`, { annotations: { topic: 'obs.in' } });
  await deploy('trig-cron', `export const handler = async () => 'tick';`, { annotations: { topic: 'cron-function', schedule: '@yearly' } });
  const nc = await connect({ servers: p.nats.url });
  await jetstream(nc).publish('obs.in', new TextEncoder().encode('hi'), { msgID: 'obs-1' });
  await jetstream(nc).publish('obs.in', new Uint8Array(700 * 1024), { msgID: 'obs-big' });
  await nc.close();
  expect((await waitFinal('trig-topic.m-obs-1')).status).toBe('succeeded');
  expect((await waitFinal('trig-topic.m-obs-big')).status).toBe('failed');
  // Every count is in Prometheus once this is: 3 + 3 + 1 sync, 2 async.
  await waitUntil(
    async () => Number((await query('sum(gateway_function_invocation_total{function_name=~"obs-.*"})'))[0]?.value[1] ?? 0) === 9,
    30_000,
    'Prometheus to scrape the invocation counters',
  );
  await waitUntil(async () => (await query('sum(mayfly_queue_dead_total)')).length === 1, 30_000, 'the dead call in Prometheus');
  await waitUntil(async () => (await query('sum(mayfly_trigger_rejected_total)')).length === 1, 30_000, 'the trigger counters in Prometheus');
  // A few more scrapes, so rate() over the dashboard's window has two samples of every new series.
  await new Promise((r) => setTimeout(r, 3000));
});

afterAll(async () => {
  // Prometheus first, by PID, whatever happened above.
  await prom?.stop();
  prom = null;
  process.off('exit', killPrometheusOnExit);
  await p?.stop();
  if (promDir) fs.rmSync(promDir, { recursive: true, force: true });
});

describe('metrics through a real Prometheus', () => {
  it('discovers gateway, scheduler and worker from the targets file', async () => {
    const res = (await (await fetch(`${prom!.url}/api/v1/targets?state=active`)).json()) as {
      data: { activeTargets: Array<{ labels: Record<string, string>; health: string }> };
    };
    const up = res.data.activeTargets.map((t) => `${t.labels.service}:${t.health}`).sort();
    expect(up).toEqual(['gateway:up', 'scheduler:up', 'worker:up']);
    expect(res.data.activeTargets.find((t) => t.labels.service === 'worker')!.labels.mayfly_id).toBe('w1');
  });

  it('counts invocations per function and status code (sync by the gateway, async by the scheduler)', async () => {
    expect(await byLabel('sum by (function_name) (gateway_function_invocation_total{function_name=~"obs-.*"})', 'function_name')).toEqual({
      'obs-req': 3,
      'obs-fn': 3,
      'obs-err': 1,
      'obs-async': 1,
      'obs-flaky': 1,
    });
    const codes = await byLabel('sum by (code) (gateway_function_invocation_total{function_name=~"obs-(err|flaky|req)"})', 'code');
    expect(codes).toEqual({ '200': 3, '500': 1, '503': 1 });
    expect(await byLabel('sum by (function_name) (gateway_function_invocation_started{function_name=~"obs-(req|async)"})', 'function_name')).toEqual({
      'obs-req': 3,
      'obs-async': 1,
    });
    expect(await byLabel('sum by (function_name) (gateway_service_count{function_name=~"obs-.*"})', 'function_name')).toEqual({
      'obs-req': 1,
      'obs-fn': 1,
      'obs-err': 1,
      'obs-async': 1,
      'obs-flaky': 1,
    });
  });

  it('has the latency histogram', async () => {
    const count = await byLabel('sum by (function_name) (gateway_functions_seconds_count{function_name="obs-req"})', 'function_name');
    expect(count).toEqual({ 'obs-req': 3 });
    const inf = await query('sum(gateway_functions_seconds_bucket{function_name="obs-req",le="+Inf"})');
    expect(Number(inf[0]!.value[1])).toBe(3);
    const buckets = await query('gateway_functions_seconds_bucket{function_name="obs-req"}');
    expect(buckets.length).toBeGreaterThan(10);
    const p99 = await query('histogram_quantile(0.99, sum by (le) (gateway_functions_seconds_bucket{function_name="obs-req"}))');
    expect(Number(p99[0]!.value[1])).toBeGreaterThan(0);
  });

  it('has the VM lifecycle metrics', async () => {
    const kinds = await byLabel('sum by (kind) (mayfly_vm_start_seconds_count{host="w1"})', 'kind');
    expect(kinds.unpause).toBe(2);
    const fresh = (kinds.pool ?? 0) + (kinds.clone ?? 0) + (kinds.boot ?? 0);
    // obs-req 3 + obs-fn 1 + obs-err 1 + obs-async 1 + obs-flaky 2 attempts + trig-topic 1
    expect(fresh).toBe(9);
    expect(await byLabel('sum by (function_name) (mayfly_cold_starts_total{function_name=~"obs-(req|fn)"})', 'function_name')).toEqual({
      'obs-req': 3,
      'obs-fn': 1,
    });
    expect(await byLabel('sum by (function_name) (mayfly_warm_starts_total)', 'function_name')).toEqual({ 'obs-fn': 2 });
    const states = await byLabel('sum by (state) (mayfly_vms{host="w1"})', 'state');
    expect(Object.keys(states).sort()).toEqual(['booting', 'busy', 'pool', 'warm']);
    expect(states.warm).toBe(1); // obs-fn's VM, paused until its TTL
    expect(Number((await query('mayfly_invocation_wait_seconds_count{function_name="obs-req"}'))[0]!.value[1])).toBe(3);
    expect(Number((await query('mayfly_host_memory_budget_bytes{host="w1"}'))[0]!.value[1])).toBe(4096 * 1024 * 1024);
    expect(Number((await query('mayfly_host_memory_reserved_bytes{host="w1"}'))[0]!.value[1])).toBeGreaterThan(0);
    expect((await query('mayfly_host_memory_free_bytes{host="w1"}')).length).toBe(1);
    expect(Number((await query('mayfly_pool_target{host="w1"}'))[0]!.value[1])).toBeGreaterThanOrEqual(1);
    // The first fill, then one per pool VM taken (refills run in the background, beside the function snapshots being made).
    const refillsNow = async () => Number((await query('mayfly_pool_refills_total{host="w1"}'))[0]!.value[1]);
    await waitUntil(async () => (await refillsNow()) >= 1 + (kinds.pool ?? 0), 30_000, 'the pool refills in Prometheus');
    const refills = await refillsNow();
    expect(Number((await query('sum(mayfly_pool_refill_seconds_count{host="w1"})'))[0]!.value[1])).toBe(refills);
  });

  it('has the queue and scheduler metrics', async () => {
    expect(await byLabel('sum by (function_name) (mayfly_queue_submitted_total{function_name=~"obs-.*"})', 'function_name')).toEqual({
      'obs-async': 1,
      'obs-flaky': 1,
    });
    expect(await byLabel('sum by (status) (mayfly_queue_processed_total{function_name=~"obs-.*"})', 'status')).toEqual({ succeeded: 1, dead: 1 });
    expect(await byLabel('sum by (function_name) (mayfly_queue_retried_total)', 'function_name')).toEqual({ 'obs-flaky': 1 });
    expect(await byLabel('sum by (function_name) (mayfly_queue_dead_total)', 'function_name')).toEqual({ 'obs-flaky': 1 });
    expect(await byLabel('sum by (state) (mayfly_queue_pending)', 'state')).toEqual({ waiting: 0, running: 0 });
    // 3 + 3 + 1 sync, 1 + 2 async attempts, 1 trigger call; the reason depends on how fresh the scheduler's heartbeats were
    const placements = await byLabel('sum by (reason) (mayfly_placements_total)', 'reason');
    expect(Object.keys(placements).sort()).toEqual(['memory', 'none', 'pool', 'snapshot', 'warm']);
    // Sync calls to a version a worker already holds a VM or snapshot of go there in one hop, without placement.
    const routes = await byLabel('sum by (route) (mayfly_gateway_invoke_routes_total)', 'route');
    expect((routes.direct ?? 0) + (routes.placed ?? 0)).toBe(7);
    expect(routes.direct ?? 0).toBeGreaterThanOrEqual(1);
    // 10 async attempts and trigger calls are placed too (11 in all with the sync ones), minus the one-hop calls.
    const placed = 11 - (routes.direct ?? 0);
    expect(Object.values(placements).reduce((a, b) => a + b, 0)).toBe(placed);
    expect(placements.none).toBe(0);
    expect(Number((await query('sum(mayfly_placement_seconds_count)'))[0]!.value[1])).toBe(placed);
    expect(Number((await query('mayfly_hosts_alive'))[0]!.value[1])).toBe(1);
    // process metrics of every service
    expect(Object.keys(await byLabel('count by (service) (process_cpu_seconds_total{service!=""})', 'service')).sort()).toEqual([
      'gateway',
      'scheduler',
      'worker',
    ]);
  });

  it('passes promtool check metrics on every service', async () => {
    const groups = targetGroups();
    expect(groups.map((g) => g.labels.service).sort()).toEqual(['gateway', 'scheduler', 'worker']);
    for (const g of groups) {
      const text = await (await fetch(`${g.labels.__scheme__}://${g.targets[0]}${g.labels.__metrics_path__}`)).text();
      expect(text).toContain('process_cpu_seconds_total');
      let out = '';
      try {
        out = execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
      } catch (err) {
        const e = err as { stdout?: Buffer; stderr?: Buffer };
        throw new Error(`promtool check metrics failed for ${g.labels.service}: ${e.stdout?.toString()}${e.stderr?.toString()}`);
      }
      expect(out.trim()).toBe('');
    }
  });

  it('every PromQL expression of the Grafana dashboard returns data', async () => {
    interface Panel {
      type: string;
      title: string;
      targets?: Array<{ expr: string }>;
    }
    const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
      panels: Panel[];
      templating: { list: Array<{ name: string; type: string; definition?: string }> };
    };
    const substitute = (expr: string) =>
      expr.replaceAll('$__rate_interval', '1m').replaceAll('$function', '.*').replaceAll('$host', '.*');
    const exprs = dash.panels.flatMap((pn) => (pn.targets ?? []).map((t) => ({ panel: pn.title, expr: t.expr })));
    expect(exprs.length).toBeGreaterThan(20);
    const empty: string[] = [];
    for (const { panel, expr } of exprs) {
      const q = substitute(expr);
      expect(q).not.toContain('$');
      if ((await query(q)).length === 0) empty.push(`${panel}: ${q}`);
    }
    expect(empty).toEqual([]);
    // the variables' label_values() queries too
    for (const v of dash.templating.list.filter((x) => x.type === 'query')) {
      const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(v.definition ?? '');
      expect(m, `variable ${v.name}`).not.toBeNull();
      expect((await query(`count by (${m![2]}) (${m![1]})`)).length, `variable ${v.name}`).toBeGreaterThan(0);
    }
    // a concrete value works as well as "All"
    expect((await query(substitute('sum by (host, state) (mayfly_vms{host=~"$host"})').replace('.*', 'w1'))).length).toBe(4);
  });
});

describe('logs', () => {
  it('GET /system/logs returns a function log lines as NDJSON, oldest first', async () => {
    const res = await fetch(`${p.gatewayUrl}/system/logs?name=obs-req&tail=2`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(lines.map((l) => l.text)).toEqual(['req r1', 'req r2']);
    for (const l of lines) {
      expect(l).toMatchObject({ name: 'obs-req', instance: 'w1', stream: 'stdout' });
      expect(Date.parse(l.timestamp!)).toBeGreaterThan(Date.now() - 10 * 60_000);
    }
    expect(lines[1]!.callId).toBe(syncCallId);

    const all = (await (await fetch(`${p.gatewayUrl}/system/logs?name=obs-fn`)).text()).trim().split('\n');
    expect(all.map((l) => (JSON.parse(l) as { text: string; stream: string }).text)).toEqual(['call 1', 'call 2', 'call 3']);
    const asyncLogs = (await (await fetch(`${p.gatewayUrl}/system/logs?name=obs-async&since=10m`)).text()).trim();
    expect(JSON.parse(asyncLogs)).toMatchObject({ name: 'obs-async', text: 'async hello' });
    const future = new Date(Date.now() + 60_000).toISOString();
    expect(await (await fetch(`${p.gatewayUrl}/system/logs?name=obs-req&since=${future}`)).text()).toBe('');
    expect((await fetch(`${p.gatewayUrl}/system/logs?name=nope`)).status).toBe(404);
    expect((await fetch(`${p.gatewayUrl}/system/logs`)).status).toBe(400);
    expect((await fetch(`${p.gatewayUrl}/system/logs?name=obs-req&tail=x`)).status).toBe(400);
  });

  it('puts the call id on the log lines of every service about a call', () => {
    const lines = (name: string) =>
      p
        .logs(name)
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.callId === syncCallId);
    expect(lines('gateway').map((l) => l.msg)).toContain('request completed');
    expect(lines('scheduler').map((l) => l.msg)).toContain('placed');
    expect(lines('w1').map((l) => l.msg)).toContain('call done');
    // Prometheus's scrapes of the gateway (every second here) are not logged
    expect(p.logs('gateway')).not.toContain('"url":"/metrics"');
  });
});
