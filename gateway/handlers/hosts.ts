/**
 * GET /system/hosts: the worker hosts this gateway hears heartbeats from, with
 * their VMs by state, pools, warm functions, snapshots and memory budget, and
 * their VM start counters read from each worker's /metrics (`starts`: count and
 * total seconds per start kind and for pool refills; absent when the worker's
 * metrics could not be read, with `startsError`). Read-only; the console's Hosts
 * and VMs page polls it and draws rates and mean latencies from two readings.
 */
import type { RouteHandlerMethod } from 'fastify';
import type { HostView } from '../../lib/host-directory.js';
import { scrapeStartCounters, type StartCounters } from '../../lib/worker-scrape.js';
import type { GatewayDeps } from '../deps.js';
import { GatewayError } from '../errors.js';

/** Readings younger than this are reused: many console tabs do not multiply the scrapes. */
const READING_TTL_MS = 500;

export function listHosts(deps: GatewayDeps, scrape: (url: string) => Promise<StartCounters> = scrapeStartCounters): RouteHandlerMethod {
  const cache = new Map<string, { at: number; reading: Promise<StartCounters> }>();
  const read = (url: string): Promise<StartCounters> => {
    const now = Date.now();
    const hit = cache.get(url);
    if (hit && now - hit.at < READING_TTL_MS) return hit.reading;
    const reading = scrape(url);
    cache.set(url, { at: now, reading });
    if (cache.size > 1000) cache.delete(cache.keys().next().value!);
    return reading;
  };
  return async () => {
    if (!deps.hosts) throw new GatewayError(501, 'NOT_CONFIGURED', 'this gateway does not follow worker heartbeats');
    const hosts = deps.hosts.list();
    return Promise.all(
      hosts.map(async (h): Promise<HostView & { starts?: StartCounters; startsError?: string }> => {
        if (!h.metricsUrl) return { ...h, startsError: 'the worker announces no metrics address' };
        try {
          return { ...h, starts: await read(h.metricsUrl) };
        } catch (err) {
          return { ...h, startsError: `could not read the worker's metrics: ${(err as Error).message}` };
        }
      }),
    );
  };
}
