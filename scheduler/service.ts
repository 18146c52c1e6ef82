/**
 * The scheduler: stateless replicas in one NATS queue group. Keeps a live view
 * of hosts from worker heartbeats (soft state, rebuilt from the bus after a
 * restart), places each call by `rankHosts`, and offers it to hosts in that
 * order. A host that refuses or does not answer within the offer timeout is
 * skipped; an accepted call is the worker's to answer, straight to the
 * gateway's reply subject. Nothing is retried once a worker accepted it: the
 * function may have started.
 */
import {
  heartbeatSchema,
  invokeRequestSchema,
  offerReplySchema,
  QUEUE_GROUPS,
  SUBJECTS,
  type Heartbeat,
  type InvokeRequest,
  type InvokeResult,
} from '../contracts/bus.js';
import type { MayflyConfig } from '../contracts/config.js';
import { METRICS_SUBJECTS, metricsAnnouncementSchema } from '../contracts/metrics.js';
import type { Logger } from '../lib/logger.js';
import { announceMetrics, processId } from '../lib/metrics-announcer.js';
import { startMetricsServer } from '../lib/metrics.js';
import { connectNats, jsonCodec } from '../lib/nats.js';
import { prometheusSdFile, TargetsFile } from '../lib/prometheus-sd.js';
import { startAsyncConsumer } from './async-consumer.js';
import { HostWatch } from '../lib/host-watch.js';
import { BusProbe } from '../lib/bus-probe.js';
import { SchedulerMetrics } from './metrics.js';
import { rankHosts } from './placement.js';
import { stamp } from '../lib/trace.js';
import { startTriggers } from './triggers/index.js';

export interface SchedulerService {
  hosts(): Heartbeat[];
  stop(): Promise<void>;
}

export async function startScheduler(config: MayflyConfig, log: Logger): Promise<SchedulerService> {
  const nc = await connectNats(config.MAYFLY_NATS_URL, 'mayfly-scheduler', { jsReplicas: config.MAYFLY_JS_REPLICAS });
  const seen = new Map<string, { hb: Heartbeat; at: number }>();
  let rotation = 0;
  const metrics = new SchedulerMetrics();
  const sdFile = prometheusSdFile(config);
  /** Prometheus file_sd targets: workers from heartbeats, gateways and schedulers from announcements. */
  const targets = sdFile ? new TargetsFile(sdFile, config.MAYFLY_HOST_TTL_MS) : null;

  const alive = (): Heartbeat[] => {
    const now = Date.now();
    const out: Heartbeat[] = [];
    for (const [id, h] of seen) {
      if (now - h.at > config.MAYFLY_HOST_TTL_MS) seen.delete(id);
      else out.push(h.hb);
    }
    return out;
  };

  const hbSub = nc.subscribe(SUBJECTS.heartbeat, {
    callback: (err, msg) => {
      if (err) return;
      try {
        const hb = heartbeatSchema.parse(jsonCodec.decode(msg.data));
        seen.set(hb.hostId, { hb, at: Date.now() });
        if (hb.metricsUrl) targets?.saw({ service: 'worker', id: hb.hostId, url: hb.metricsUrl });
      } catch {
        log.warn('ignoring an invalid heartbeat');
      }
    },
  });

  function answer(req: InvokeRequest, code: 'NO_CAPACITY', message: string): void {
    const result: InvokeResult = { callId: req.callId, durationMs: 0, logs: [], outcome: { kind: 'platform', code, message } };
    nc.publish(req.replyTo, jsonCodec.encode(result));
  }

  /**
   * Offers the call to hosts until one accepts; that worker publishes the
   * result to req.replyTo. When none does within the placement timeout, the
   * scheduler publishes a NO_CAPACITY result there itself. Resolves with the
   * host that accepted the call, or null (NO_CAPACITY answered).
   */
  async function place(req: InvokeRequest): Promise<string | null> {
    const t0 = performance.now();
    const deadline = Date.now() + config.MAYFLY_PLACEMENT_TIMEOUT_MS;
    const refusals: string[] = [];
    for (let round = 0; ; round++) {
      const hosts = alive();
      for (const c of rankHosts(hosts, req.fn, rotation++)) {
        try {
          // The worker must answer well inside the timeout, or refuse: see offerExpiresAt.
          stamp(req.trace, 'sched-offer');
          const offer = jsonCodec.encode({ ...req, offerExpiresAt: Date.now() + config.MAYFLY_OFFER_TIMEOUT_MS / 2 });
          const reply = offerReplySchema.parse(
            jsonCodec.decode((await nc.request(SUBJECTS.hostInvoke(c.hostId), offer, { timeout: config.MAYFLY_OFFER_TIMEOUT_MS })).data),
          );
          if (reply.accepted) {
            metrics.placed(c.reason, (performance.now() - t0) / 1000);
            log.info({ callId: req.callId, fn: req.fn.name, host: c.hostId, reason: c.reason, round }, 'placed');
            return c.hostId;
          }
          refusals.push(`${c.hostId}: ${reply.reason}`);
        } catch (err) {
          refusals.push(`${c.hostId}: ${(err as Error).message}`);
          // A host that does not answer is probably gone: stop offering it work until it beats again.
          seen.delete(c.hostId);
        }
      }
      if (Date.now() > deadline) break;
      // Full or no hosts: wait for capacity (heartbeats) rather than fail at once.
      await new Promise((r) => setTimeout(r, Math.min(500, 50 * 2 ** Math.min(round, 4))));
    }
    const why = refusals.length ? `hosts refused: ${[...new Set(refusals)].slice(-5).join('; ')}` : 'no worker hosts are alive';
    metrics.placed('none', (performance.now() - t0) / 1000);
    log.warn({ callId: req.callId, fn: req.fn.name }, `no host for the call: ${why}`);
    answer(req, 'NO_CAPACITY', `no host could take the call within ${config.MAYFLY_PLACEMENT_TIMEOUT_MS} ms (${why})`);
    return null;
  }

  const sub = nc.subscribe(SUBJECTS.invoke, {
    queue: QUEUE_GROUPS.schedulers,
    callback: (err, msg) => {
      if (err) return;
      let req: InvokeRequest;
      try {
        const raw = jsonCodec.decode(msg.data) as Record<string, unknown>;
        // A sync request carries its reply subject in the message itself (NATS request/reply).
        req = invokeRequestSchema.parse({ ...raw, replyTo: raw.replyTo ?? msg.reply });
        stamp(req.trace, 'sched-recv');
      } catch (e) {
        log.warn({ err: e }, 'ignoring an invalid invoke request');
        return;
      }
      void place(req).catch((e: unknown) => log.error({ err: e, callId: req.callId }, 'placement failed'));
    },
  });

  // Async attempts on a host that stops heartbeating are given up at the host TTL, not at their timeout.
  const busProbe = new BusProbe(nc);
  const hostWatch = new HostWatch(config.MAYFLY_HOST_TTL_MS, nc, { ownBusLostForMs: () => busProbe.lostForMs() });
  const asyncCalls = await startAsyncConsumer(nc, config, log, place, metrics, hostWatch);
  const triggers = await startTriggers(nc, config, log, metrics);

  metrics.attach({
    hostsAlive: () => alive().length,
    asyncInflight: () => asyncCalls.inflightByFunction(),
    queueDepth: () => asyncCalls.queueDepth(),
  });
  const metricsServer = await startMetricsServer(metrics.registry, { host: config.MAYFLY_METRICS_HOST, port: config.MAYFLY_SCHEDULER_METRICS_PORT });
  const self = { service: 'scheduler' as const, id: processId('scheduler'), url: metricsServer.url };
  const announcer = announceMetrics(nc, self, config.MAYFLY_HEARTBEAT_MS);
  const announceSub = nc.subscribe(METRICS_SUBJECTS.announce, {
    callback: (err, msg) => {
      if (err || !targets) return;
      let data: unknown = null;
      try {
        data = jsonCodec.decode(msg.data);
      } catch {
        // not JSON: ignored like an invalid announcement
      }
      const a = metricsAnnouncementSchema.safeParse(data);
      if (a.success) targets.saw(a.data);
    },
  });
  let sdWarned = false;
  const syncTargets = () => {
    if (!targets) return;
    targets.saw(self);
    targets.sync().then(
      () => (sdWarned = false),
      (err: unknown) => {
        if (!sdWarned) log.warn({ file: targets.file, err: (err as Error).message }, 'cannot write the Prometheus targets file');
        sdWarned = true;
      },
    );
  };
  syncTargets();
  const sdTimer = setInterval(syncTargets, Math.min(config.MAYFLY_HEARTBEAT_MS, 1000));
  sdTimer.unref();
  log.info({ metrics: metricsServer.url, prometheusTargets: targets?.file ?? 'off' }, 'metrics listener ready');

  return {
    hosts: alive,
    async stop() {
      clearInterval(sdTimer);
      announcer.stop();
      announceSub.unsubscribe();
      sub.unsubscribe();
      hbSub.unsubscribe();
      await triggers.stop();
      await asyncCalls.stop();
      hostWatch.stop();
      busProbe.stop();
      await nc.drain().catch(() => {});
      await metricsServer.close();
    },
  };
}
