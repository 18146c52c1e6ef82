/**
 * Schedules: every scheduler replica computes the same ticks of every
 * scheduled function (cron in UTC, or `@every` at multiples of the interval
 * since the epoch) and, at each, queues the call `<fn>.tick-<ms>`. The record
 * is created with compare-and-set and the queue drops a repeated call id, so
 * a tick runs once however many replicas fire it, and keeps running when any
 * one of them dies. No leader.
 *
 * A replica fires ticks from the time it first sees the function: a platform
 * that was down does not fire the ticks it missed, unless the function has
 * `com.mayfly.schedule_catchup: "true"`; then the ticks since the last one
 * fired (bucket mayfly_schedules) are fired, at most TRIGGER_LIMITS.catchUpTicks,
 * the newest ones. Ticks that come due while this replica's event loop was busy
 * are fired late, within LATE_GRACE_MS; older ones are left to the other replicas.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { AsyncCall } from '../../contracts/bus.js';
import { NATS_CALLBACK_PROTOCOL, SCHEDULES_BUCKET, TRIGGER_LIMITS } from '../../contracts/triggers.js';
import type { AsyncPublisher } from '../../lib/async-queue.js';
import type { CallRecords } from '../../lib/call-records.js';
import type { Logger } from '../../lib/logger.js';
import type { NatsConnection } from '../../lib/nats.js';
import { replySubject, wantsCatchUp, type Schedule } from '../../lib/trigger-annotations.js';
import type { SchedulerMetrics } from '../metrics.js';
import { tickCallId, tickEvent } from './event.js';
import type { FunctionView } from './function-view.js';
import { enqueue } from './enqueue.js';

/** A tick due longer ago than this (event loop stalled, laptop asleep) is skipped by this replica. */
export const LATE_GRACE_MS = 60_000;
/** Longest sleep between checks, so a new or changed schedule is picked up promptly. */
const MAX_SLEEP_MS = 1000;

export interface TickerDeps {
  nc: NatsConnection;
  log: Logger;
  view: FunctionView;
  records: CallRecords;
  publisher: AsyncPublisher;
  metrics?: SchedulerMetrics | undefined;
}

export interface Ticker {
  /** Next tick per scheduled function (ms since epoch). */
  nextTicks(): ReadonlyMap<string, number>;
  stop(): Promise<void>;
}

interface State {
  expression: string;
  version: number;
  next: number;
}

export async function startTicker(d: TickerDeps): Promise<Ticker> {
  const { log, view, records, publisher, metrics } = d;
  const lastTicks: KV = await new Kvm(d.nc).create(SCHEDULES_BUCKET, { history: 1 });
  const states = new Map<string, State>();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  let running: Promise<void> = Promise.resolve();

  async function fire(name: string, schedule: Schedule, tick: number, annotations: Record<string, string>): Promise<void> {
    const callId = tickCallId(name, tick);
    let reply: string | undefined;
    try {
      reply = replySubject(annotations);
    } catch {
      reply = undefined; // checked at deploy
    }
    const call: AsyncCall = {
      callId,
      functionName: name,
      event: tickEvent(name, schedule.expression, tick, callId),
      submittedAt: tick,
      trigger: 'schedule',
      ...(reply !== undefined ? { callbackUrl: `${NATS_CALLBACK_PROTOCOL}${reply}` } : {}),
    };
    if (await enqueue(records, publisher, call)) {
      metrics?.triggers.started.inc({ trigger: 'schedule', function_name: name });
      log.info({ fn: name, callId, tick: new Date(tick).toISOString() }, 'schedule tick');
    }
    if (wantsCatchUp(annotations)) await remember(name, tick);
  }

  /** Records the newest tick fired (compare-and-set, only forward). */
  async function remember(name: string, tick: number): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const e = await lastTicks.get(name);
      const prev = e?.operation === 'PUT' ? Number(e.string()) : 0;
      if (prev >= tick) return;
      try {
        if (e) await lastTicks.update(name, String(tick), e.revision);
        else await lastTicks.create(name, String(tick));
        return;
      } catch {
        // another replica wrote in between
      }
    }
  }

  /** Ticks missed while no replica ran (catch-up functions only), oldest first. */
  async function missed(name: string, schedule: Schedule, now: number): Promise<number[]> {
    const e = await lastTicks.get(name);
    if (!e || e.operation !== 'PUT') return [];
    const out: number[] = [];
    for (let t = schedule.next(Number(e.string())); t !== null && t <= now; t = schedule.next(t)) {
      out.push(t);
      if (out.length > TRIGGER_LIMITS.catchUpTicks) out.shift();
    }
    return out;
  }

  async function step(): Promise<void> {
    await view.refresh();
    const now = Date.now();
    const scheduled = view.schedules();
    for (const name of states.keys()) if (!scheduled.has(name)) states.delete(name);
    for (const [name, { fn, schedule }] of scheduled) {
      let st = states.get(name);
      if (!st || st.expression !== schedule.expression || st.version !== fn.version) {
        const fresh = !st;
        st = { expression: schedule.expression, version: fn.version, next: schedule.next(now) ?? Infinity };
        states.set(name, st);
        if (fresh && wantsCatchUp(fn.annotations)) {
          for (const t of await missed(name, schedule, now)) await fire(name, schedule, t, fn.annotations);
        }
      }
      while (st.next <= Date.now()) {
        const tick = st.next;
        // Advanced only once the tick is queued: with NATS away, the same tick is tried again (within the grace).
        if (Date.now() - tick <= LATE_GRACE_MS) await fire(name, schedule, tick, fn.annotations);
        st.next = schedule.next(tick) ?? Infinity;
      }
    }
  }

  async function loop(): Promise<void> {
    while (!stopped) {
      try {
        await step();
      } catch (err) {
        if (!stopped) log.warn({ err: (err as Error).message }, 'schedules: NATS unavailable; retrying');
        await new Promise((r) => setTimeout(r, 250));
      }
      const soonest = Math.min(...[...states.values()].map((s) => s.next), Date.now() + MAX_SLEEP_MS);
      await new Promise<void>((r) => {
        wake = r;
        timer = setTimeout(r, Math.max(5, Math.min(MAX_SLEEP_MS, soonest - Date.now())));
      });
    }
  }

  running = loop();
  return {
    nextTicks: () => new Map([...states].map(([n, s]) => [n, s.next])),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      wake?.();
      await running;
    },
  };
}
