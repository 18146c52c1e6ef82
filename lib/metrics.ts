/**
 * Prometheus plumbing shared by the services: a registry per service instance
 * (never prom-client's global one, so several services can share a process in
 * tests) with the default process metrics, metrics made from the definitions
 * in contracts/metrics.ts, and a small node:http listener for /metrics (the
 * gateway serves /metrics through Fastify instead).
 */
import http from 'node:http';
import os from 'node:os';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricType } from 'prom-client';
import type { MetricDef } from '../contracts/metrics.js';

type Labels<D extends MetricDef> = D['labelNames'][number];

/**
 * prom-client's gauges `nodejs_active_{handles,requests,resources}_total` break
 * the exposition conventions (a gauge must not end in `_total`; promtool
 * rejects them). The same numbers remain without the suffix (by type).
 */
const NON_CONFORMING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** A registry with prom-client's default process metrics (CPU, memory, event loop lag, GC, fds). */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of NON_CONFORMING_DEFAULTS) registry.removeSingleMetric(name);
  return registry;
}

function check(d: MetricDef, type: MetricDef['type']): void {
  if (d.type !== type) throw new Error(`metric ${d.name} is a ${d.type}, not a ${type}`);
}

export function counter<D extends MetricDef>(registry: Registry, d: D, collect?: (this: Counter<Labels<D>>) => void | Promise<void>): Counter<Labels<D>> {
  check(d, 'counter');
  return new Counter<Labels<D>>({ name: d.name, help: d.help, labelNames: d.labelNames, registers: [registry], ...(collect ? { collect } : {}) });
}

export function gauge<D extends MetricDef>(registry: Registry, d: D, collect?: (this: Gauge<Labels<D>>) => void | Promise<void>): Gauge<Labels<D>> {
  check(d, 'gauge');
  return new Gauge<Labels<D>>({ name: d.name, help: d.help, labelNames: d.labelNames, registers: [registry], ...(collect ? { collect } : {}) });
}

export function histogram<D extends MetricDef>(registry: Registry, d: D): Histogram<Labels<D>> {
  check(d, 'histogram');
  return new Histogram<Labels<D>>({
    name: d.name,
    help: d.help,
    labelNames: d.labelNames,
    buckets: [...(d.buckets ?? [])],
    registers: [registry],
  });
}

/**
 * A counter exposed with `# TYPE untyped`: for legacy names without `_total`
 * (OpenFaaS), which `promtool check metrics` rejects as counters.
 */
class UntypedCounter<T extends string> extends Counter<T> {
  override async get() {
    const m = await super.get();
    return { ...m, type: 'untyped' as unknown as MetricType };
  }
}

export function untypedCounter<D extends MetricDef>(registry: Registry, d: D): Counter<Labels<D>> {
  check(d, 'untyped');
  return new UntypedCounter<Labels<D>>({ name: d.name, help: d.help, labelNames: d.labelNames, registers: [registry] });
}

/** A gauge exposed with `# TYPE untyped`: for legacy names ending in `_count` (OpenFaaS). */
class UntypedGauge<T extends string> extends Gauge<T> {
  override async get() {
    const m = await super.get();
    return { ...m, type: 'untyped' as unknown as MetricType };
  }
}

export function untypedGauge<D extends MetricDef>(registry: Registry, d: D): Gauge<Labels<D>> {
  check(d, 'untyped');
  return new UntypedGauge<Labels<D>>({ name: d.name, help: d.help, labelNames: d.labelNames, registers: [registry] });
}

/** Host name to put in an announced URL: the bind address, or this machine's name when bound to all interfaces. */
export function advertisedHost(bindHost: string, hostname: string = os.hostname()): string {
  if (bindHost === '0.0.0.0' || bindHost === '::' || bindHost === '') return hostname;
  return bindHost.includes(':') && !bindHost.startsWith('[') ? `[${bindHost}]` : bindHost;
}

export interface MetricsServer {
  /** Full URL of /metrics, with the port the OS picked when asked for 0. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (and `GET /healthz`) of one registry on host:port (0 =
 * any free port). Scrapes are cheap: the text is rendered per request.
 */
export async function startMetricsServer(registry: Registry, opts: { host: string; port: number }): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('OK');
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('only /metrics and /healthz here\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`metrics failed: ${(err as Error).message}\n`);
      },
    );
  });
  server.keepAliveTimeout = 65_000; // longer than Prometheus's scrape interval, so connections are reused
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${advertisedHost(opts.host)}:${port}/metrics`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
