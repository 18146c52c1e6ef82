/**
 * The worker service: one per hypervisor host. Listens for offers on its own
 * subject, admits or refuses them at once (memory budget), runs admitted calls
 * in VMs and publishes each result straight to the gateway's reply subject.
 * Heartbeats its capacity so schedulers can place work. On stop it refuses new
 * work, lets running calls finish, and destroys every VM.
 */
import fs from 'node:fs';
import os from 'node:os';
import type { Subscription } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import {
  heartbeatSchema,
  invokeRequestSchema,
  QUEUE_GROUPS,
  SUBJECTS,
  type CallAccepted,
  type DirectRefusal,
  type Heartbeat,
  type InvokeRequest,
  type InvokeResult,
  type OfferReply,
  type PlatformErrorCode,
} from '../contracts/bus.js';
import type { MayflyConfig } from '../contracts/config.js';
import { secretsKey } from '../lib/credentials.js';
import { FunctionStore, functionLimits } from '../lib/function-store.js';
import { SecretError, SecretStore } from '../lib/secrets.js';
import type { Logger } from '../lib/logger.js';
import { startMetricsServer } from '../lib/metrics.js';
import { connectNats, jsonCodec, type NatsConnection } from '../lib/nats.js';
import { InvocationError, type InvocationErrorCode } from './guest-session.js';
import { WorkerMetrics } from './metrics.js';
import { VmHost } from './vm-host.js';
import { BootImages, type BootImage } from './oci-boot.js';
import { watchReplicaFloors } from './scale-floor.js';
import { stamp } from '../lib/trace.js';
import { VmManager, type Reservation } from './vm-manager.js';
import { HostMemory } from './host-memory.js';
import { AcceptedOffers } from './accepted-offers.js';
import { swapAvailable } from './driver/page-out.js';
import { BusProbe } from '../lib/bus-probe.js';
import { watchBusCutoff } from './bus-cutoff.js';
import { RecentResults } from './recent-results.js';
import type { GuestSession } from './guest-session.js';

export interface WorkerService {
  hostId: string;
  manager: VmManager;
  stop(): Promise<void>;
}

export function defaultHostId(): string {
  return `${os.hostname()}-${process.pid}`.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 64);
}

/** How a VM-level failure is reported to the user. */
export function platformCode(code: InvocationErrorCode): PlatformErrorCode {
  switch (code) {
    case 'FUNCTION_TIMEOUT':
      return 'FUNCTION_TIMEOUT';
    case 'INIT_FAILED':
    case 'INIT_TIMEOUT':
      return 'INIT_FAILED';
    case 'GUEST_BAD_FRAME':
    case 'GUEST_FRAME_TOO_LARGE':
    case 'GUEST_BAD_MESSAGE':
    case 'GUEST_LOG_LIMIT':
    case 'VM_MEMORY_LIMIT':
      return 'GUEST_FAULT';
    case 'VM_BUSY':
      return 'INTERNAL';
    default:
      return 'VM_FAILED';
  }
}

const CODE_CACHE_ENTRIES = 256;
/** Reply subjects of async attempts (SUBJECTS.asyncResults without its `>`), and how long a worker retries storing one. */
const ASYNC_RESULT_PREFIX = SUBJECTS.asyncResults.slice(0, -1);
const ASYNC_RESULT_STORE_MS = 60_000;

export async function startWorker(config: MayflyConfig, log: Logger): Promise<WorkerService> {
  const hostId = config.MAYFLY_HOST_ID ?? defaultHostId();
  const host = await VmHost.open(config, (p) => log.info({ image: p }, 'image build'));
  log.info({ hostId, accel: host.driver.accel, why: host.accelWhy, image: host.image.imageId }, 'VM host ready');
  log.info({ jailer: host.jailWhy }, 'VM jailer');
  if (config.MAYFLY_CLONES) {
    const t = await host.template(config.MAYFLY_DEFAULT_MEMORY_MB);
    log.info({ functionMiB: t.functionMiB, ms: Math.round(t.makeMs) }, 'template snapshot ready');
  }
  const nc: NatsConnection = await connectNats(config.MAYFLY_NATS_URL, `mayfly-worker-${hostId}`, { jsReplicas: config.MAYFLY_JS_REPLICAS });
  const store = await FunctionStore.open(nc, functionLimits(config));
  const js = jetstream(nc);
  const secrets = await SecretStore.open(nc, secretsKey(config).key);
  const metrics = new WorkerMetrics(hostId, host.image.runtime);
  // Every VM holds three descriptors here (QMP, guest channel, QEMU's stderr): say when the limit is low.
  const nofile = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
  if (nofile && nofile !== 'unlimited' && Number(nofile) < 4096) {
    log.warn({ nofile: Number(nofile) }, `open-file limit ${nofile} allows about ${Math.floor(Number(nofile) / 4)} VMs: raise it (ulimit -Hn, LimitNOFILE=) for a dense host`);
  }
  // Idle reclaim pages VMs out to swap: without swap it would only cost a page walk.
  const idleReclaimMs = (): number => {
    if (config.MAYFLY_IDLE_RECLAIM_MS === 0) return 0;
    if (!swapAvailable()) {
      log.info('idle reclaim is off: the host has no swap for idle VMs to page out to (README "Density": zram)');
      return 0;
    }
    return config.MAYFLY_IDLE_RECLAIM_MS;
  };
  const manager = new VmManager(
    host,
    {
      memoryBudgetMiB: config.MAYFLY_MEMORY_BUDGET_MB,
      poolSize: config.MAYFLY_POOL_SIZE,
      poolMax: Math.max(config.MAYFLY_POOL_SIZE, config.MAYFLY_POOL_MAX),
      clones: config.MAYFLY_CLONES,
      functionSnapshotsMax: config.MAYFLY_FUNCTION_SNAPSHOTS_MAX,
      poolFunctionMiB: config.MAYFLY_DEFAULT_MEMORY_MB,
      warmTtlMs: config.MAYFLY_WARM_TTL_MS,
      warmLingerMs: config.MAYFLY_WARM_LINGER_MS,
      onRefill: (r) => metrics.refilled(r),
      onServing: (fn, on) => serveDirect(fn, on),
      hostMemory: new HostMemory(config.MAYFLY_HOST_MEMORY_RESERVE_MB),
      idleReclaimMs: idleReclaimMs(),
      onReclaim: (bytes) => metrics.reclaimed(bytes),
    },
    log,
  );
  manager.start();

  // Code by content hash: immutable, so a cached copy is always right.
  const codeCache = new Map<string, string>();
  async function code(hash: string): Promise<string | null> {
    const hit = codeCache.get(hash);
    if (hit !== undefined) return hit;
    const fetched = await store.getCode(hash);
    if (fetched === null) return null;
    if (codeCache.size >= CODE_CACHE_ENTRIES) codeCache.delete(codeCache.keys().next().value!);
    codeCache.set(hash, fetched);
    return fetched;
  }

  // Image functions: the runtime initramfs + the image's root filesystem, cached per (image, rootfs).
  const bootImages = new BootImages(config.MAYFLY_CACHE_DIR, host.image, (object) => store.getRootfs(object));

  // OpenFaaS replicas: ready VMs per function, from com.openfaas.scale.min / scale-function (worker/scale-floor.ts).
  const floors = await watchReplicaFloors(
    nc,
    manager,
    async (fn) => {
      const c = await code(fn.codeHash);
      if (c === null) return null;
      const boot = fn.rootfs ? await bootImages.ensure(fn.rootfs) : undefined;
      return { code: c, secrets: {}, ...(boot ? { boot } : {}) };
    },
    log,
  );

  let inflight = 0;
  let draining = false;
  const running = new Set<Promise<void>>();
  /** Sessions running a call, ended when the host is cut off the bus (bus-cutoff.ts). */
  const sessions = new Set<GuestSession>();
  const probe = new BusProbe(nc);
  const recent = new RecentResults(nc, hostId);
  const cutoff = watchBusCutoff({
    probe,
    limitMs: config.MAYFLY_BUS_LOST_MS,
    log,
    onCut: (ms) => {
      for (const s of sessions) void s.destroy(`host ${hostId} was cut off the bus for ${ms} ms; the call was given up`).catch(() => {});
    },
  });

  /** Admits a call (memory) and runs it in the background; the result goes to req.replyTo. */
  const offers = new AcceptedOffers();
  function admit(req: InvokeRequest): boolean {
    if (cutoff.cut) return false;
    const reservation = manager.reserve(req.fn);
    if (!reservation) return false;
    // Tell the waiting gateway which host runs the call: it answers HOST_LOST if this host dies.
    if (req.acceptedTo) nc.publish(req.acceptedTo, jsonCodec.encode({ callId: req.callId, hostId } satisfies CallAccepted));
    recent.started(req.callId, req.acceptedTo);
    inflight++;
    const p = run(req, reservation).finally(() => {
      inflight--;
      running.delete(p);
    });
    running.add(p);
    return true;
  }

  /**
   * The one-hop path (SUBJECTS.functionInvoke): while this host holds a VM or a
   * snapshot of a function version it takes that version's calls straight from
   * the gateway, in one queue group with the other hosts that hold one. A call it
   * cannot admit is refused before anything of it runs (the gateway then asks the
   * scheduler), so a call still never runs twice.
   */
  const direct = new Map<string, Subscription>();
  function serveDirect(fn: { name: string; version: number }, on: boolean): void {
    const subject = SUBJECTS.functionInvoke(fn.name, fn.version);
    const existing = direct.get(subject);
    if (!on) {
      existing?.unsubscribe();
      direct.delete(subject);
      return;
    }
    if (existing || draining) return;
    direct.set(
      subject,
      nc.subscribe(subject, {
        queue: QUEUE_GROUPS.workers,
        callback: (err, msg) => {
          if (err || !msg.reply) return;
          const refuse = (why: string): void => void msg.respond(jsonCodec.encode({ refused: why, hostId } satisfies DirectRefusal));
          let req: InvokeRequest;
          try {
            const parsed = invokeRequestSchema.safeParse({ ...(jsonCodec.decode(msg.data) as object), replyTo: msg.reply });
            if (!parsed.success) return refuse('invalid invoke request');
            req = parsed.data;
          } catch {
            return refuse('invalid invoke request');
          }
          stamp(req.trace, 'worker-recv');
          if (draining) return refuse('host is shutting down');
          if (req.fn.name !== fn.name || req.fn.version !== fn.version) return refuse('function version does not match the subject');
          // The gateway stops waiting for this host after its offer timeout (a cut-off host's stale request).
          if (req.offerExpiresAt && Date.now() > req.offerExpiresAt) return refuse('offer expired');
          if (!admit(req)) refuse(manager.lastRefusal());
        },
      }),
    );
  }

  function publish(replyTo: string, result: InvokeResult): void {
    stamp(result.trace, 'worker-publish');
    let data = jsonCodec.encode(result);
    const max = nc.info?.max_payload ?? 1024 * 1024;
    if (data.length > max) {
      data = jsonCodec.encode({
        ...result,
        logs: [],
        outcome: { kind: 'platform', code: 'INTERNAL', message: `the result is ${data.length} bytes, above the bus limit of ${max}` },
      } satisfies InvokeResult);
    }
    if (replyTo.startsWith(ASYNC_RESULT_PREFIX)) {
      storeAsyncResult(replyTo, data);
      recent.finished(result.callId);
    } else {
      nc.publish(replyTo, data);
      recent.finished(result.callId, replyTo, data); // sent again if the gateway's NATS node lost it
    }
  }

  /**
   * An async attempt's result goes to a stored stream (lib/async-results.ts): published
   * through JetStream and retried until stored, so a result sent while nats-server
   * restarts is not lost (the scheduler would run the call again). The stream keeps one
   * message per attempt subject, so a retried publish cannot make a second result.
   */
  const storing = new Set<Promise<void>>();
  function storeAsyncResult(subject: string, data: Uint8Array): void {
    const p = (async () => {
      const deadline = Date.now() + ASYNC_RESULT_STORE_MS;
      for (;;) {
        try {
          await js.publish(subject, data, { timeout: 2000 });
          return;
        } catch (err) {
          if (Date.now() > deadline || nc.isClosed()) {
            log.warn({ subject, err: (err as Error).message }, 'could not store an async result; the scheduler may run the call again');
            return;
          }
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    })().finally(() => storing.delete(p));
    storing.add(p);
  }

  async function run(req: InvokeRequest, reservation: Reservation): Promise<void> {
    const t0 = performance.now();
    const fail = (code: PlatformErrorCode, message: string, logs: InvokeResult['logs'] = []): InvokeResult => ({
      callId: req.callId,
      hostId,
      durationMs: performance.now() - t0,
      logs,
      ...(req.trace ? { trace: req.trace } : {}),
      outcome: { kind: 'platform', code, message },
    });
    let result: InvokeResult;
    let published = false;
    const source = await code(req.fn.codeHash).catch(() => null);
    let secretValues: Record<string, string> | null = {};
    let secretError = '';
    if (req.fn.secrets.length > 0) {
      secretValues = await secrets.reveal(req.fn.secrets).catch((err: unknown) => {
        secretError = err instanceof SecretError ? err.message : 'the secrets could not be read';
        return null;
      });
    }
    let boot: BootImage | undefined;
    let bootError = '';
    if (req.fn.rootfs) {
      boot = await bootImages.ensure(req.fn.rootfs).catch((err: unknown) => {
        bootError = (err as Error).message;
        return undefined;
      });
    }
    if (req.fn.rootfs && !boot) {
      reservation.cancel();
      result = fail('CODE_UNAVAILABLE', `function "${req.fn.name}" cannot start: ${bootError}`);
    } else if (source === null) {
      reservation.cancel();
      result = fail('CODE_UNAVAILABLE', `the code of function "${req.fn.name}" could not be fetched`);
    } else if (secretValues === null) {
      reservation.cancel();
      result = fail('INIT_FAILED', `function "${req.fn.name}" cannot start: ${secretError}`);
    } else {
      try {
        const lease = await reservation.acquire(req.fn, { code: source, secrets: secretValues, ...(boot ? { boot } : {}) });
        stamp(req.trace, 'worker-vm');
        metrics.callStarted({
          functionName: req.fn.name,
          runtime: req.fn.runtime,
          start: lease.start,
          startSeconds: lease.startMs / 1000,
          receivedAt: req.receivedAt,
        });
        let healthy = false;
        sessions.add(lease.session);
        try {
          const outcome = await lease.session.invoke({ callId: req.callId, event: req.event, timeoutMs: req.fn.timeoutMs });
          stamp(req.trace, 'guest-result');
          healthy = lease.session.failed === null;
          result = {
            callId: req.callId,
            hostId,
            start: lease.start,
            durationMs: performance.now() - t0,
            logs: outcome.logs,
            ...(req.trace ? { trace: req.trace } : {}),
            outcome: outcome.ok
              ? { kind: 'value', ...('value' in outcome ? { value: outcome.value } : {}) }
              : { kind: 'error', error: outcome.error },
          };
          log.info({ callId: req.callId, fn: req.fn.name, start: lease.start, startMs: Math.round(lease.startMs), ok: outcome.ok }, 'call done');
          // A VM that will be destroyed (per-request, or failed) is destroyed after the answer is
          // on its way, not on the caller's time. A warm VM is paused first, so the next call finds it.
          if (req.fn.isolation === 'per-request' || !healthy) {
            publish(req.replyTo, result);
            published = true;
          }
        } finally {
          sessions.delete(lease.session);
          await lease.release(healthy);
        }
      } catch (err) {
        if (err instanceof InvocationError) {
          log.warn({ callId: req.callId, fn: req.fn.name, code: err.code }, err.message);
          result = fail(platformCode(err.code), err.message, err.logs);
        } else {
          log.error({ err, callId: req.callId }, 'invocation failed');
          result = fail('INTERNAL', `internal error on host ${hostId}; call id ${req.callId}`);
        }
      }
    }
    if (!published) publish(req.replyTo, result);
  }

  const sub: Subscription = nc.subscribe(SUBJECTS.hostInvoke(hostId), {
    callback: (err, msg) => {
      if (err) return;
      const reply = (r: OfferReply) => msg.respond(jsonCodec.encode(r));
      let parsed;
      try {
        parsed = invokeRequestSchema.safeParse(jsonCodec.decode(msg.data));
      } catch {
        parsed = null;
      }
      if (!parsed?.success) return void reply({ accepted: false, hostId, reason: 'invalid invoke request' });
      stamp(parsed.data.trace, 'worker-recv');
      if (draining) return void reply({ accepted: false, hostId, reason: 'host is shutting down' });
      // The scheduler gave up on this offer already and may have placed the call elsewhere.
      if (Date.now() > parsed.data.offerExpiresAt) return void reply({ accepted: false, hostId, reason: 'offer expired' });
      // The same attempt offered again (our "accepted" was lost with a NATS node): it runs here already.
      if (offers.has(parsed.data.replyTo)) return void reply({ accepted: true, hostId });
      if (!admit(parsed.data)) return void reply({ accepted: false, hostId, reason: manager.lastRefusal() });
      offers.add(parsed.data.replyTo);
      reply({ accepted: true, hostId });
    },
  });

  metrics.attach({
    stats: () => manager.stats(),
    get reservedMiB() {
      return manager.reservedMiB;
    },
    budgetMiB: config.MAYFLY_MEMORY_BUDGET_MB,
    inflight: () => inflight,
  });
  // Announced in every heartbeat (`metricsUrl`): the scheduler writes it into Prometheus's targets file.
  const metricsServer = await startMetricsServer(metrics.registry, { host: config.MAYFLY_METRICS_HOST, port: config.MAYFLY_WORKER_METRICS_PORT });
  log.info({ metrics: metricsServer.url }, 'metrics listener ready');

  const beat = () => {
    const s = manager.stats();
    const hb: Heartbeat = heartbeatSchema.parse({
      hostId,
      metricsUrl: metricsServer.url,
      sentAt: Date.now(),
      memoryBudgetMiB: config.MAYFLY_MEMORY_BUDGET_MB,
      memoryReservedMiB: manager.reservedMiB,
      inflight,
      vms: s.vms,
      warm: s.warm,
      pools: s.pools,
      snapshots: s.snapshots.filter((x) => x.ready).map((x) => x.key),
      ready: Object.fromEntries(s.snapshots.filter((x) => x.pooled > 0).map((x) => [x.key, x.pooled])),
    });
    nc.publish(SUBJECTS.heartbeat, jsonCodec.encode(hb));
  };
  beat();
  const heartbeat = setInterval(beat, config.MAYFLY_HEARTBEAT_MS);

  return {
    hostId,
    manager,
    async stop() {
      draining = true;
      floors.stop();
      clearInterval(heartbeat);
      cutoff.stop();
      probe.stop();
      recent.stop();
      sub.unsubscribe();
      for (const d of direct.values()) d.unsubscribe();
      direct.clear();
      await Promise.allSettled([...running]);
      await Promise.allSettled([...storing]);
      await manager.close();
      await nc.drain().catch(() => {});
      await metricsServer.close();
    },
  };
}
