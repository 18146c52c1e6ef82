/**
 * Triggers (issue 15): NATS subjects and schedules become async calls with
 * call records, run by the async consumer like any other (retries, the dead
 * state, one final record). scheduler/service.ts starts this once per replica.
 *
 *   function-view.ts   which functions have which triggers (functions bucket)
 *   subject-mapper.ts  captured message → one async call per matching function
 *   ticker.ts          schedule tick → one async call, once across replicas
 *   event.ts           the event and call id of a message or tick
 *   enqueue.ts         record + async queue, idempotently
 *
 * Also keeps the capture stream's subjects in step with the functions (the
 * gateway does it at deploy; this repairs races and missed updates).
 */
import type { Gauge } from 'prom-client';
import type { MayflyConfig } from '../../contracts/config.js';
import { TRIGGER_METRICS } from '../../contracts/metrics.js';
import { AsyncPublisher, ensureAsyncStream } from '../../lib/async-queue.js';
import { CallRecords } from '../../lib/call-records.js';
import { FunctionStore, functionLimits } from '../../lib/function-store.js';
import type { Logger } from '../../lib/logger.js';
import { gauge } from '../../lib/metrics.js';
import type { NatsConnection } from '../../lib/nats.js';
import { syncTriggerStream } from '../../lib/trigger-stream.js';
import type { SchedulerMetrics } from '../metrics.js';
import { FunctionView } from './function-view.js';
import { startSubjectMapper } from './subject-mapper.js';
import { startTicker } from './ticker.js';

export interface TriggersHandle {
  stop(): Promise<void>;
}

/** A scrape must not hang on NATS. */
const SAMPLE_TIMEOUT_MS = 2000;

export async function startTriggers(nc: NatsConnection, config: MayflyConfig, log: Logger, metrics?: SchedulerMetrics): Promise<TriggersHandle> {
  const records = await CallRecords.open(nc, config.MAYFLY_RECORD_TTL_MS);
  const store = await FunctionStore.open(nc, functionLimits(config));
  await ensureAsyncStream(nc);
  const publisher = new AsyncPublisher(nc);
  const view = new FunctionView(nc, store, log);
  await view.refresh(true);
  let synced = -1;
  await syncTriggerStream(nc, view.functions()).then(
    () => (synced = view.revision),
    (err: unknown) => log.warn({ err: (err as Error).message }, 'cannot set the trigger stream subjects'),
  );

  const mapper = await startSubjectMapper({ nc, config, log, view, records, publisher, metrics });
  const ticker = await startTicker({ nc, log, view, records, publisher, metrics });

  // Keep the capture stream's subjects in step with the functions.
  let stopped = false;
  let syncing: Promise<void> = Promise.resolve();
  let syncWarned = false;
  const sync = async () => {
    try {
      await view.refresh();
      const revision = view.revision;
      if (revision !== synced) {
        await syncTriggerStream(nc, view.functions());
        synced = revision;
      }
      syncWarned = false;
    } catch (err) {
      if (!syncWarned && !stopped) log.warn({ err: (err as Error).message }, 'cannot bring the trigger stream in step; retrying');
      syncWarned = true;
    }
  };
  const syncTimer = setInterval(() => {
    syncing = syncing.then(sync);
  }, config.MAYFLY_TRIGGER_REFRESH_MS);
  syncTimer.unref();

  if (metrics) {
    gauge(metrics.registry, TRIGGER_METRICS.lag, async function (this: Gauge<'state'>) {
      let timer: NodeJS.Timeout | undefined;
      try {
        const lag = await Promise.race([
          mapper.lag(),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), SAMPLE_TIMEOUT_MS))),
        ]);
        this.set({ state: 'waiting' }, lag.waiting);
        this.set({ state: 'mapping' }, lag.mapping);
      } catch {
        this.reset(); // unknown (NATS away): absent rather than stale
      } finally {
        clearTimeout(timer);
      }
    });
    gauge(metrics.registry, TRIGGER_METRICS.nextFire, function (this: Gauge<'function_name'>) {
      this.reset();
      for (const [fn, t] of ticker.nextTicks()) if (Number.isFinite(t)) this.set({ function_name: fn }, t / 1000);
    });
  }
  log.info({ subjects: view.functions().length, schedules: view.schedules().size }, 'triggers ready');

  return {
    async stop() {
      stopped = true;
      clearInterval(syncTimer);
      await Promise.all([mapper.stop(), ticker.stop()]);
      await syncing;
    },
  };
}
