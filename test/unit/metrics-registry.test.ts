/**
 * The metric definitions (contracts/metrics.ts), the registries built from them
 * (lib/metrics.ts, gateway/worker/scheduler metrics) and the /metrics listener:
 * every service's text passes `promtool check metrics`.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { Registry } from 'prom-client';
import type { AsyncCall } from '../../contracts/bus.js';
import type { FunctionRecord } from '../../contracts/functions.js';
import {
  GATEWAY_METRICS,
  metricsAnnouncementSchema,
  QUEUE_METRICS,
  SCHEDULER_METRICS,
  TRIGGER_METRICS,
  vmStartKindLabel,
  WORKER_METRICS,
  type MetricDef,
} from '../../contracts/metrics.js';
import type { GatewayBackend } from '../../gateway/backend.js';
import { countAsyncSubmissions, GatewayMetrics } from '../../gateway/metrics.js';
import { advertisedHost, createRegistry, startMetricsServer } from '../../lib/metrics.js';
import { SchedulerMetrics } from '../../scheduler/metrics.js';
import { WorkerMetrics } from '../../worker/metrics.js';

const ALL: MetricDef[] = [GATEWAY_METRICS, QUEUE_METRICS, SCHEDULER_METRICS, WORKER_METRICS, TRIGGER_METRICS].flatMap((g) => Object.values(g));

function promtool(text: string): string {
  try {
    return execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    return `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}` || 'promtool failed';
  }
}

/** `name{labels} value` lines of one metric, as a map from the label string to the value. */
function series(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out[m[2] ?? ''] = Number(m[3]);
  }
  return out;
}

describe('metric definitions', () => {
  it('have unique, valid names; counters end in _total except the OpenFaaS ones, which are untyped', () => {
    const names = ALL.map((d) => d.name);
    expect(new Set(names).size).toBe(names.length);
    for (const d of ALL) {
      expect(d.name).toMatch(/^[a-z_][a-z0-9_]*$/);
      expect(d.help.length).toBeGreaterThan(10);
      if (d.type === 'counter') expect(d.name).toMatch(/_total$/);
      else expect(d.name).not.toMatch(/_total$/);
      if (d.type === 'histogram') {
        expect(d.buckets!.length).toBeGreaterThan(5);
        expect([...d.buckets!]).toEqual([...d.buckets!].sort((a, b) => a - b));
      }
      if (d.type === 'untyped') expect(d.name.startsWith('gateway_')).toBe(true);
      if (!d.name.startsWith('gateway_')) expect(d.name.startsWith('mayfly_')).toBe(true);
    }
  });

  it('keep the OpenFaaS gateway names and labels', () => {
    expect(GATEWAY_METRICS.invocationTotal).toMatchObject({ name: 'gateway_function_invocation_total', labelNames: ['function_name', 'code'] });
    expect(GATEWAY_METRICS.functionSeconds).toMatchObject({ name: 'gateway_functions_seconds', type: 'histogram', labelNames: ['function_name', 'code'] });
    expect(GATEWAY_METRICS.serviceCount).toMatchObject({ name: 'gateway_service_count', labelNames: ['function_name'] });
    expect(GATEWAY_METRICS.invocationStarted).toMatchObject({ name: 'gateway_function_invocation_started', labelNames: ['function_name'] });
    expect(WORKER_METRICS.vmStartSeconds.labelNames).toEqual(['host', 'runtime', 'kind']);
    expect(WORKER_METRICS.vms.labelNames).toEqual(['host', 'state']);
  });

  it('map how a VM was obtained to the kind label', () => {
    expect(vmStartKindLabel('cold')).toBe('boot');
    expect(vmStartKindLabel('warm')).toBe('unpause');
    expect(vmStartKindLabel('pool')).toBe('pool');
    expect(vmStartKindLabel('clone')).toBe('clone');
    expect(vmStartKindLabel('snapshot')).toBe('snapshot');
  });

  it('validate announcements', () => {
    expect(metricsAnnouncementSchema.safeParse({ service: 'gateway', id: 'g', url: 'http://127.0.0.1:8080/metrics', sentAt: 1 }).success).toBe(true);
    expect(metricsAnnouncementSchema.safeParse({ service: 'db', id: 'g', url: 'http://x/metrics', sentAt: 1 }).success).toBe(false);
    expect(metricsAnnouncementSchema.safeParse({ service: 'worker', id: 'w', url: 'nope', sentAt: 1 }).success).toBe(false);
  });
});

describe('registries', () => {
  it('have the default process metrics without the non-conforming *_total gauges', async () => {
    const text = await createRegistry().metrics();
    expect(text).toContain('process_cpu_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
    expect(text).not.toMatch(/nodejs_active_\w+_total/);
    expect(promtool(text)).toBe('');
  });

  it('are separate per instance', async () => {
    const a = new GatewayMetrics();
    const b = new GatewayMetrics();
    a.invocationFinished('f', 200, 0.1);
    expect(await a.text()).toContain('gateway_function_invocation_total{function_name="f",code="200"} 1');
    expect(await b.text()).not.toContain('gateway_function_invocation_total{');
  });

  it('gateway: OpenFaaS series, untyped legacy names, async submissions; promtool passes', async () => {
    const m = new GatewayMetrics();
    m.invocationStartedFor('f');
    m.invocationFinished('f', 500, 0.2);
    m.asyncSubmitted('g');
    m.setServices(['f', 'g']);
    const text = await m.text();
    expect(text).toContain('# TYPE gateway_function_invocation_started untyped');
    expect(text).toContain('# TYPE gateway_service_count untyped');
    expect(series(text, 'gateway_function_invocation_started')).toEqual({ '{function_name="f"}': 1, '{function_name="g"}': 1 });
    expect(series(text, 'mayfly_queue_submitted_total')).toEqual({ '{function_name="g"}': 1 });
    expect(series(text, 'gateway_functions_seconds_count')).toEqual({ '{function_name="f",code="500"}': 1 });
    expect(series(text, 'gateway_service_count')).toEqual({ '{function_name="f"}': 1, '{function_name="g"}': 1 });
    expect(promtool(text)).toBe('');
  });

  it('worker: starts by kind, cold/warm, wait, refills and gauges read at scrape time; promtool passes', async () => {
    const m = new WorkerMetrics('w1');
    const now = Date.now();
    m.callStarted({ functionName: 'f', runtime: 'node', start: 'cold', startSeconds: 2, receivedAt: now - 2500 }, now);
    m.callStarted({ functionName: 'f', runtime: 'node', start: 'warm', startSeconds: 0.001, receivedAt: now + 50 }, now);
    m.callStarted({ functionName: 'g', runtime: 'node', start: 'pool', startSeconds: 0.2, receivedAt: now - 300 }, now);
    m.refilled({ seconds: 1.2, ok: true });
    m.refilled({ seconds: 0.1, ok: false });
    let text = await m.registry.metrics();
    expect(series(text, 'mayfly_vms')).toEqual({}); // not attached yet: absent, not zero
    m.attach({
      stats: () => ({ vms: { booting: 1, pool: 2, warm: 3, busy: 4 }, pools: { node: 2 }, poolTarget: 3 }),
      reservedMiB: 1000,
      budgetMiB: 4096,
      inflight: () => 4,
    });
    text = await m.registry.metrics();
    expect(series(text, 'mayfly_vm_start_seconds_count')).toEqual({
      '{host="w1",runtime="node",kind="boot"}': 1,
      '{host="w1",runtime="node",kind="unpause"}': 1,
      '{host="w1",runtime="node",kind="pool"}': 1,
    });
    expect(series(text, 'mayfly_cold_starts_total')).toEqual({ '{function_name="f"}': 1, '{function_name="g"}': 1 });
    expect(series(text, 'mayfly_warm_starts_total')).toEqual({ '{function_name="f"}': 1 });
    expect(series(text, 'mayfly_invocation_wait_seconds_sum')).toEqual({ '{function_name="f"}': 2.5, '{function_name="g"}': 0.3 });
    expect(series(text, 'mayfly_vms')).toEqual({
      '{host="w1",state="booting"}': 1,
      '{host="w1",state="pool"}': 2,
      '{host="w1",state="warm"}': 3,
      '{host="w1",state="busy"}': 4,
    });
    expect(series(text, 'mayfly_host_memory_free_bytes')).toEqual({ '{host="w1"}': 3096 * 1024 * 1024 });
    expect(series(text, 'mayfly_host_memory_reserved_bytes')).toEqual({ '{host="w1"}': 1000 * 1024 * 1024 });
    expect(series(text, 'mayfly_pool_ready')).toEqual({ '{host="w1",runtime="node"}': 2 });
    expect(series(text, 'mayfly_pool_target')).toEqual({ '{host="w1",runtime="node"}': 3 });
    expect(series(text, 'mayfly_pool_refills_total')).toEqual({ '{host="w1",runtime="node"}': 1 });
    expect(series(text, 'mayfly_pool_refill_failures_total')).toEqual({ '{host="w1",runtime="node"}': 1 });
    expect(series(text, 'mayfly_pool_refill_seconds_count')).toEqual({ '{host="w1",runtime="node"}': 1 });
    expect(series(text, 'mayfly_worker_inflight')).toEqual({ '{host="w1"}': 4 });
    expect(promtool(text)).toBe('');
  });

  it('scheduler: placements, async outcomes under the OpenFaaS names, sampled queue depth; promtool passes', async () => {
    const m = new SchedulerMetrics();
    m.placed('pool', 0.002);
    m.placed('none', 30);
    m.asyncFinished('f', 'succeeded', 200, 0.5);
    m.asyncFinished('f', 'dead', 503, 0.1);
    m.asyncRetried('f');
    let depth: () => Promise<{ waiting: number; running: number }> = async () => ({ waiting: 5, running: 2 });
    m.attach({ hostsAlive: () => 3, asyncInflight: () => new Map([['f', 2]]), queueDepth: () => depth() });
    let text = await m.registry.metrics();
    expect(series(text, 'mayfly_placements_total')).toEqual({ '{reason="warm"}': 0, '{reason="snapshot"}': 0, '{reason="pool"}': 1, '{reason="memory"}': 0, '{reason="none"}': 1 });
    expect(series(text, 'mayfly_placement_seconds_count')).toEqual({ '{reason="pool"}': 1, '{reason="none"}': 1 });
    expect(series(text, 'gateway_function_invocation_total')).toEqual({ '{function_name="f",code="200"}': 1, '{function_name="f",code="503"}': 1 });
    expect(series(text, 'mayfly_queue_processed_total')).toEqual({ '{function_name="f",status="succeeded"}': 1, '{function_name="f",status="dead"}': 1 });
    expect(series(text, 'mayfly_queue_dead_total')).toEqual({ '{function_name="f"}': 1 });
    expect(series(text, 'mayfly_queue_retried_total')).toEqual({ '{function_name="f"}': 1 });
    expect(series(text, 'mayfly_queue_pending')).toEqual({ '{state="waiting"}': 5, '{state="running"}': 2 });
    expect(series(text, 'mayfly_queue_inflight')).toEqual({ '{function_name="f"}': 2 });
    expect(series(text, 'mayfly_hosts_alive')).toEqual({ '': 3 });
    expect(promtool(text)).toBe('');

    // NATS away: the depth is absent rather than stale
    depth = async () => {
      throw new Error('no responders');
    };
    text = await m.registry.metrics();
    expect(series(text, 'mayfly_queue_pending')).toEqual({});
  });
});

describe('countAsyncSubmissions', () => {
  it('counts accepted async calls, not duplicates, and looks every other member up at call time', async () => {
    const metrics = new GatewayMetrics();
    const seen = new Set<string>();
    const backend = {
      submitAsync: async (_fn: FunctionRecord, call: AsyncCall) => {
        const duplicate = seen.has(call.callId);
        seen.add(call.callId);
        return { duplicate };
      },
      healthy: () => true,
    } as unknown as GatewayBackend;
    const wrapped = countAsyncSubmissions(backend, metrics);
    const fn = { name: 'f' } as FunctionRecord;
    const call = (callId: string) => ({ callId, functionName: 'f', event: {} as AsyncCall['event'], submittedAt: 0 });
    expect(await wrapped.submitAsync(fn, call('a'))).toEqual({ duplicate: false });
    expect(await wrapped.submitAsync(fn, call('a'))).toEqual({ duplicate: true });
    expect(await wrapped.submitAsync(fn, call('b'))).toEqual({ duplicate: false });
    expect(series(await metrics.text(), 'mayfly_queue_submitted_total')).toEqual({ '{function_name="f"}': 2 });
    expect(wrapped.healthy()).toBe(true);
    backend.healthy = () => false; // replaced after wrapping (tests do this)
    expect(wrapped.healthy()).toBe(false);
    expect(wrapped.functionLogs).toBeUndefined();
  });
});

describe('metrics listener', () => {
  async function withServer(registry: Registry, f: (url: string) => Promise<void>): Promise<void> {
    const s = await startMetricsServer(registry, { host: '127.0.0.1', port: 0 });
    try {
      expect(s.url).toBe(`http://127.0.0.1:${s.port}/metrics`);
      await f(s.url);
    } finally {
      await s.close();
    }
  }

  it('serves /metrics in the Prometheus text format, /healthz, and 404 elsewhere', async () => {
    const m = new SchedulerMetrics();
    m.placed('warm', 0.001);
    await withServer(m.registry, async (url) => {
      const r = await fetch(url);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      expect(await r.text()).toContain('mayfly_placements_total{reason="warm"} 1');
      expect((await fetch(url.replace('/metrics', '/healthz'))).status).toBe(200);
      expect((await fetch(url.replace('/metrics', '/other'))).status).toBe(404);
      expect((await fetch(url, { method: 'POST' })).status).toBe(405);
    });
  });

  it('announces the machine name when bound to every interface', () => {
    expect(advertisedHost('0.0.0.0', 'box')).toBe('box');
    expect(advertisedHost('::', 'box')).toBe('box');
    expect(advertisedHost('10.1.2.3', 'box')).toBe('10.1.2.3');
    expect(advertisedHost('fd00::1', 'box')).toBe('[fd00::1]');
  });
});
