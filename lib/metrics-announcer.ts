/**
 * Announces a service's /metrics address on the bus (METRICS_SUBJECTS.announce)
 * every `intervalMs`, for the scheduler's Prometheus targets file. Workers
 * announce through their heartbeat (`metricsUrl`) instead.
 */
import os from 'node:os';
import type { NatsConnection } from '@nats-io/transport-node';
import { METRICS_SUBJECTS, metricsAnnouncementSchema, type MetricsService } from '../contracts/metrics.js';
import { jsonCodec } from './nats.js';

/** `<service>-<hostname>-<pid>`: unique per process, readable in dashboards. */
export function processId(service: MetricsService): string {
  return `${service}-${os.hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 128);
}

export function announceMetrics(
  nc: NatsConnection,
  who: { service: MetricsService; id: string; url: string },
  intervalMs: number,
): { stop(): void } {
  const send = () => {
    if (nc.isClosed()) return;
    try {
      nc.publish(METRICS_SUBJECTS.announce, jsonCodec.encode(metricsAnnouncementSchema.parse({ ...who, sentAt: Date.now() })));
    } catch {
      // disconnected: the next tick tries again
    }
  };
  send();
  const timer = setInterval(send, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
