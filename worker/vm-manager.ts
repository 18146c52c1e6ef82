/**
 * The VMs of one host: memory accounting and admission, the pool of pre-booted
 * paused VMs (LightVM's split toolstack: the slow boot happens before the
 * request), and per-function warm VMs (paused between calls, destroyed after an
 * idle TTL). Every VM serves one function at most, and a `per-request` VM serves
 * exactly one invocation.
 *
 * Admission is synchronous (`reserve`): the memory is taken when the worker
 * accepts an offer, so concurrent offers cannot overbook the host. All per-VM
 * work is O(1) in the number of VMs (maps keyed by function; no scans on the
 * hot path except evicting idle warm VMs when memory is short).
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { StartKind } from '../contracts/bus.js';
import { usesSnapshot, type FunctionRecord } from '../contracts/functions.js';
import type { Logger } from '../lib/logger.js';
import { DriverError } from './driver/types.js';
import { InvocationError, type GuestSession } from './guest-session.js';
import { guestMemoryMiB, type Template, type VmHost } from './vm-host.js';
import type { HostMemory } from './host-memory.js';
import { rootfsExtraMiB, type BootImage } from './oci-boot.js';

export interface VmManagerOptions {
  memoryBudgetMiB: number;
  /** Ready VMs to keep at least, for functions with the default memory size. */
  poolSize: number;
  /** The most the pool grows to under load (Little's law: arrival rate × refill time). */
  poolMax: number;
  poolFunctionMiB: number;
  warmTtlMs: number;
  /** Make VMs as copy-on-write clones of a booted template instead of cold boots. */
  clones: boolean;
  /** Function snapshots kept at most (annotation com.mayfly.snapshot; needs clones); 0: none. */
  functionSnapshotsMax?: number;
  /** Told after every pool refill (metrics): how long it took and whether a VM was added. */
  onRefill?: (r: { seconds: number; ok: boolean }) => void;
  /**
   * A healthy per-function VM stays running this long after a call before it is
   * paused: back-to-back calls skip the pause/unpause (LightVM pauses idle
   * guests, not busy ones). 0 pauses at once.
   */
  warmLingerMs?: number;
  /**
   * Told when this host starts or stops holding something that serves a function
   * version without placement: a per-function VM of it (idle or busy) or its ready
   * snapshot. The worker subscribes to that version's one-hop subject meanwhile.
   */
  onServing?: (fn: { name: string; version: number }, serving: boolean) => void;
  /** Keeps the host's MemAvailable above a reserve (admission by measured memory); unset: the budget only. */
  hostMemory?: HostMemory;
  /**
   * A paused warm VM idle this long gives its private memory back to the host
   * (driver.reclaim: paged out to swap, e.g. zram); 0 or no swap: never.
   */
  idleReclaimMs?: number;
  /** Told after each idle reclaim (metrics): bytes paged out. */
  onReclaim?: (bytes: number) => void;
}

/** Sliding count of events per second over the last `windowMs`. */
class RateMeter {
  private stamps: number[] = [];
  constructor(private readonly windowMs = 10_000) {}
  mark(): void {
    this.stamps.push(Date.now());
    if (this.stamps.length > 10_000) this.stamps.splice(0, 5000);
  }
  perSecond(): number {
    const since = Date.now() - this.windowMs;
    while (this.stamps.length && this.stamps[0]! < since) this.stamps.shift();
    return this.stamps.length / (this.windowMs / 1000);
  }
}

export interface Lease {
  session: GuestSession;
  start: StartKind;
  /** Time to obtain the VM (boot/unpause and function init), ms. */
  startMs: number;
  /** Gives the VM back: kept warm (per-function, healthy) or destroyed. */
  release(healthy: boolean): Promise<void>;
}

/** What a VM needs to load a function: its code and its decrypted secrets. */
export interface FunctionSource {
  code: string;
  secrets: Record<string, string>;
  /** An image function's initramfs (worker/oci-boot.ts): its VMs boot from it, not from the pool or size templates. */
  boot?: BootImage;
}

export interface Reservation {
  acquire(fn: FunctionRecord, source: FunctionSource): Promise<Lease>;
  /** Returns the memory when the call is abandoned before `acquire`. */
  cancel(): void;
}

interface WarmVm {
  session: GuestSession;
  memoryMiB: number;
  timer: NodeJS.Timeout;
  key: string;
  /** Pauses it when its linger after the last call ends (the VM runs meanwhile: vm.state). */
  linger: NodeJS.Timeout | null;
  /** The pause in flight, if any: a call that takes the VM waits for it, then unpauses. */
  pausing: Promise<void> | null;
  /** Pages the paused VM out when it stays idle (VmManagerOptions.idleReclaimMs). */
  reclaim: NodeJS.Timeout | null;
}

/** A clone of a function snapshot, resumed, warmed up and paused; its memory is counted. */
type ReadyClone = { session: GuestSession; memoryMiB: number };

/**
 * A function snapshot (SNAPSHOT_ANNOTATION): a template with one function
 * version loaded, and one VM cloned from it, resumed and paused, ready to
 * serve the next call of that version with an unpause (no boot, no module load).
 */
interface SnapshotEntry {
  key: string;
  name: string;
  functionMiB: number;
  /** null while the snapshot is being made; `failed` when making it failed (not retried for this version). */
  template: Template | null;
  failed: boolean;
  pool: Array<{ session: GuestSession; memoryMiB: number }>;
  /** Ready clones being made now (at most SNAPSHOT_REFILL_PARALLEL). */
  refilling: number;
  /** Calls waiting for the next ready clone (handed over directly instead of pooled). */
  waiters: Array<(item: ReadyClone) => void>;
  lastUsed: number;
  /** Calls of this version that wanted a fresh VM, per second, and the measured time to make one ready clone. */
  demand: RateMeter;
  refillSeconds: number;
}

/**
 * Ready clones of one function snapshot made at the same time, at most: one per
 * core and one more, since a clone's start also waits (QEMU start, restore, QMP).
 */
const SNAPSHOT_REFILL_PARALLEL = os.availableParallelism() + 1;
/** How long a call waits for a ready clone being made before it clones one itself. */
const SNAPSHOT_WAIT_MS = 1000;

export function warmKey(fn: Pick<FunctionRecord, 'name' | 'version'>): string {
  return `${fn.name}@${fn.version}`;
}

export class VmManager {
  private reserved = 0;
  private booting = 0;
  private busy = 0;
  private readonly pool: Array<{ session: GuestSession; memoryMiB: number }> = [];
  private readonly warm = new Map<string, WarmVm[]>();
  /** Idle warm VMs in the order they went idle (for eviction). */
  private readonly idleOrder = new Set<WarmVm>();
  private refilling = false;
  private closed = false;
  private readonly snapshots = new Map<string, SnapshotEntry>();
  /** Snapshot templates and snapshot VMs being made (not pool VMs: the pool refill must not wait for them). */
  private snapshotWork = 0;
  /** Calls that wanted a fresh VM (pool demand), per second. */
  private readonly demand = new RateMeter();
  /** Measured: seconds to make one pool VM, and MiB a clone really uses (PSS), as moving averages. */
  private refillSeconds = 1;
  private cloneMiB: number | null = null;
  private refills = 0;
  private refusal = 'host memory budget is full';
  private reclaimOff = false;
  /** Replica floors (keepReady): ready VMs to keep per function name, for one version. */
  private readonly floors = new Map<string, { version: number; n: number }>();
  /** What serves each function version here without placement (see onServing): VMs and ready snapshots. */
  private readonly serving = new Map<string, { name: string; version: number; holders: Set<object> }>();

  constructor(
    private readonly host: VmHost,
    private readonly opts: VmManagerOptions,
    private readonly log: Logger,
  ) {}

  get reservedMiB(): number {
    return this.reserved;
  }

  stats() {
    let warmIdle = 0;
    for (const list of this.warm.values()) warmIdle += list.length;
    return {
      vms: { booting: this.booting + this.snapshotWork, pool: this.pool.length, warm: warmIdle, busy: this.busy },
      warm: [...this.warm.entries()].filter(([, l]) => l.length > 0).map(([k]) => k),
      pools: { node: this.pool.length },
      snapshots: [...this.snapshots.values()].map((e) => ({ key: e.key, ready: e.template !== null, failed: e.failed, pooled: e.pool.length })),
      /** Replica floors (keepReady) by function name. */
      floors: Object.fromEntries([...this.floors.entries()].map(([name, f]) => [`${name}@${f.version}`, f.n])),
      poolTarget: this.poolTarget(),
      refillSeconds: this.refillSeconds,
      refills: this.refills,
      cloneMiB: this.cloneMiB,
    };
  }

  /** Little's law: VMs in flight to refill = arrival rate × refill time; never below the configured floor. */
  poolTarget(): number {
    const want = Math.ceil(this.demand.perSecond() * this.refillSeconds);
    return Math.min(this.opts.poolMax, Math.max(this.opts.poolSize, want));
  }

  /** Memory to account for a new VM: measured PSS of clones when cloning, the whole guest RAM for a cold boot. */
  private estimateMiB(functionMiB: number): number {
    const ram = guestMemoryMiB(this.host.image, functionMiB);
    if (!this.opts.clones || this.cloneMiB === null) return ram;
    // Margin: a clone's PSS grows as the function touches memory.
    return Math.min(ram, Math.ceil(this.cloneMiB * 1.5) + functionMiB / 4);
  }

  private measure(session: GuestSession): void {
    const kib = this.host.driver.memoryPssKiB(session.vm);
    if (kib === null) return;
    const mib = kib / 1024;
    this.cloneMiB = this.cloneMiB === null ? mib : this.cloneMiB * 0.8 + mib * 0.2;
  }

  private hold(fn: Pick<FunctionRecord, 'name' | 'version'>, holder: object): void {
    const key = warmKey(fn);
    let e = this.serving.get(key);
    if (!e) {
      e = { name: fn.name, version: fn.version, holders: new Set() };
      this.serving.set(key, e);
    }
    if (e.holders.has(holder)) return;
    e.holders.add(holder);
    if (e.holders.size === 1) this.tellServing(e, true);
  }

  private unhold(key: string, holder: object): void {
    const e = this.serving.get(key);
    if (!e || !e.holders.delete(holder)) return;
    if (e.holders.size === 0) {
      this.serving.delete(key);
      this.tellServing(e, false);
    }
  }

  private tellServing(e: { name: string; version: number }, on: boolean): void {
    try {
      this.opts.onServing?.({ name: e.name, version: e.version }, on);
    } catch (err) {
      this.log.warn({ err }, 'onServing observer failed');
    }
  }

  /** A per-function VM serves its function version here until it exits. */
  private holdVm(fn: FunctionRecord, session: GuestSession): void {
    if (fn.isolation !== 'per-function') return;
    const key = warmKey(fn);
    this.hold(fn, session);
    void session.vm.exited.then(() => this.unhold(key, session));
  }

  /** A fresh VM for `functionMiB`: a resumed clone of the template, or a cold boot. */
  private async freshVm(functionMiB: number, boot?: BootImage): Promise<{ session: GuestSession; kind: StartKind }> {
    if (this.opts.clones && !boot) {
      const session = await this.host.prepareClone(functionMiB);
      try {
        await session.resumeClone(randomBytes(64));
      } catch (err) {
        await session.destroy('clone failed to resume');
        throw err;
      }
      return { session, kind: 'clone' };
    }
    const session = await this.host.prepare(functionMiB, boot);
    try {
      await session.boot();
    } catch (err) {
      await session.destroy('boot failed');
      throw err;
    }
    return { session, kind: 'cold' };
  }

  /** Starts keeping the pool full. */
  start(): void {
    this.refill();
  }

  /**
   * Admission: takes the memory a call needs, or returns null when the host is
   * full (the scheduler then tries another host).
   */
  reserve(fn: FunctionRecord): Reservation | null {
    const key = warmKey(fn);
    if (fn.isolation === 'per-function' && (this.warm.get(key)?.length ?? 0) > 0) {
      const w = this.warm.get(key)!.pop()!;
      this.idleOrder.delete(w);
      clearTimeout(w.timer);
      if (w.linger) clearTimeout(w.linger);
      if (w.reclaim) clearTimeout(w.reclaim);
      w.linger = null;
      w.reclaim = null;
      return this.reservation(
        w.memoryMiB,
        async () => {
          const t0 = performance.now();
          try {
            if (w.pausing) await w.pausing;
            // Still running from its last call (the linger): nothing to unpause.
            if (w.session.vm.state !== 'running') await this.host.driver.start(w.session.vm);
          } catch (err) {
            await w.session.destroy('warm VM failed to resume');
            throw err;
          }
          return { session: w.session, start: 'warm', startMs: performance.now() - t0 };
        },
        w.session,
      );
    }
    const snap = usesSnapshot(fn) ? this.snapshots.get(key) : undefined;
    if (snap?.template) {
      snap.lastUsed = Date.now();
      snap.demand.mark();
      const ready = snap.pool.shift();
      if (ready) {
        return this.reservation(
          ready.memoryMiB,
          () => this.startReadyClone(snap, ready, performance.now()),
          ready.session,
        );
      }
    }
    this.demand.mark();
    // A function with a snapshot does not take a runtime pool VM (that would load the module on
    // the call path, ~140 ms under TCG): it waits for a snapshot clone being made, or clones one.
    // Pool VMs booted the runtime image, without an image function's root filesystem.
    const pooled = fn.memoryMiB === this.opts.poolFunctionMiB && !snap?.template && !fn.rootfs ? this.pool.shift() : undefined;
    if (pooled) {
      return this.reservation(pooled.memoryMiB, async (source) => {
        const t0 = performance.now();
        try {
          await this.host.driver.start(pooled.session.vm);
          await pooled.session.init(initOf(fn, source));
        } catch (err) {
          await pooled.session.destroy('pool VM failed to start the function');
          throw err;
        }
        this.snapshotLater(fn, source);
        return { session: pooled.session, start: 'pool', startMs: performance.now() - t0 };
      }, pooled.session);
    }
    const needMiB = this.estimateMiB(fn.memoryMiB) + (fn.rootfs ? rootfsExtraMiB(fn.rootfs) : 0);
    if (!this.makeRoom(needMiB)) return null;
    this.reserved += needMiB;
    if (snap?.template) {
      // No ready clone: one being made now is done sooner than a new one (and a new one would
      // compete with it for the CPU), so wait for it a bounded time; else clone one for this call.
      const template = snap.template;
      return this.reservation(
        needMiB,
        async () => {
          const t0 = performance.now();
          // This call counts toward the clones to make (see refillSnapshot), then waits for one.
          const next = this.nextReadyClone(snap, SNAPSHOT_WAIT_MS);
          this.refillSnapshot(snap);
          if (snap.refilling === 0) next.cancel();
          const handed = await next.ready;
          if (handed) {
            // This call's reservation covers it from now on.
            this.reserved -= handed.memoryMiB;
            return this.startReadyClone(snap, handed, t0);
          }
          const session = await this.snapshotClone(snap.functionMiB, template);
          this.refillSnapshot(snap);
          return { session, start: 'snapshot', startMs: performance.now() - t0 };
        },
        null,
      );
    }
    return this.reservation(
      needMiB,
      async (source) => {
        const lease = await this.startFresh(fn, source);
        this.snapshotLater(fn, source);
        return lease;
      },
      null,
    );
  }

  /** Unpauses a ready clone of a snapshot for a call (destroyed if it cannot run) and keeps the snapshot's clones coming. */
  private async startReadyClone(snap: SnapshotEntry, clone: ReadyClone, t0: number): Promise<Omit<Lease, 'release'>> {
    try {
      await this.host.driver.start(clone.session.vm);
    } catch (err) {
      await clone.session.destroy('snapshot VM failed to start');
      throw err;
    }
    this.refillSnapshot(snap);
    return { session: clone.session, start: 'snapshot', startMs: performance.now() - t0 };
  }

  /** A fresh VM (clone or boot) with the function loaded: the retry path of a failed start. */
  private async startFresh(fn: FunctionRecord, source: FunctionSource): Promise<Omit<Lease, 'release'>> {
    const t0 = performance.now();
    const { session, kind } = await this.freshVm(fn.memoryMiB, source.boot);
    try {
      await session.init(initOf(fn, source));
    } catch (err) {
      await session.destroy('function failed to start');
      throw err;
    }
    return { session, start: kind, startMs: performance.now() - t0 };
  }

  /** A clone of a function snapshot, resumed (re-keyed) and ready to run the function. */
  private async snapshotClone(functionMiB: number, template: Template): Promise<GuestSession> {
    const session = await this.host.prepareClone(functionMiB, template);
    try {
      await session.resumeClone(randomBytes(64));
    } catch (err) {
      await session.destroy('snapshot clone failed to resume');
      throw err;
    }
    return session;
  }

  /**
   * After a function that asks for snapshots has loaded in a VM: make its
   * snapshot in the background (once per version; a newer version replaces the
   * older ones of that function; least recently used dropped beyond the limit).
   * The VM it boots for that is counted against the memory budget while it runs;
   * when the budget has no room, no snapshot is made now (the next start tries again).
   */
  private snapshotLater(fn: FunctionRecord, source: FunctionSource): void {
    const max = this.opts.functionSnapshotsMax ?? 0;
    if (!usesSnapshot(fn) || max <= 0 || !this.opts.clones || this.closed) return;
    const key = warmKey(fn);
    if (this.snapshots.has(key)) return;
    const ramMiB = guestMemoryMiB(this.host.image, fn.memoryMiB) + (source.boot?.extraMiB ?? 0);
    if (!this.fits(ramMiB)) return;
    for (const e of [...this.snapshots.values()]) if (e.name === fn.name) void this.dropSnapshot(e, 'a newer version replaced it');
    while (this.snapshots.size >= max) {
      const oldest = [...this.snapshots.values()].reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
      void this.dropSnapshot(oldest, 'least recently used');
    }
    const entry: SnapshotEntry = {
      key,
      name: fn.name,
      functionMiB: fn.memoryMiB,
      template: null,
      failed: false,
      pool: [],
      refilling: 0,
      waiters: [],
      lastUsed: Date.now(),
      demand: new RateMeter(),
      refillSeconds: 0.5,
    };
    this.snapshots.set(key, entry);
    this.reserved += ramMiB;
    this.snapshotWork++;
    const t0 = performance.now();
    void this.host.functionTemplate(key, initOf(fn, source), source.boot).then(
      (t) => {
        this.reserved -= ramMiB;
        this.snapshotWork--;
        if (this.snapshots.get(key) !== entry || this.closed) {
          void this.host.dropFunctionTemplate(key);
          return;
        }
        entry.template = t;
        this.hold(fn, entry);
        this.log.info({ fn: key, ms: Math.round(performance.now() - t0) }, 'function snapshot ready');
        this.refillSnapshot(entry);
        this.refill(); // the memory the snapshot VM used is free again
      },
      (err: unknown) => {
        this.reserved -= ramMiB;
        this.snapshotWork--;
        entry.failed = true;
        this.log.warn({ err, fn: key }, 'function snapshot failed; its calls start as before');
        this.refill();
      },
    );
  }

  /**
   * Ready clones to keep for a snapshot: Little's law on its own demand, at least one, at most the pool's cap;
   * a function with a replica floor (keepReady) keeps at least that many instead of one.
   */
  snapshotTarget(entry: Pick<SnapshotEntry, 'demand' | 'refillSeconds'> & { key?: string; name?: string }): number {
    const cap = Math.max(1, this.opts.poolMax);
    const little = Math.ceil(entry.demand.perSecond() * entry.refillSeconds);
    const floor = entry.name !== undefined ? this.floors.get(entry.name) : undefined;
    if (floor && `${entry.name}@${floor.version}` === entry.key) return Math.max(floor.n, Math.min(cap, little));
    return Math.min(cap, Math.max(1, little));
  }

  /**
   * OpenFaaS replicas (contracts/scale.ts): keep `n` ready VMs of this function
   * version on this host, as clones of its snapshot (made now if it has none
   * yet; needs snapshots, so not for functions with secrets). 0 keeps none
   * ready while idle. Fewer than before: idle ready clones beyond it are destroyed.
   */
  keepReady(fn: FunctionRecord, source: FunctionSource | null, n: number): void {
    if (this.closed) return;
    this.floors.set(fn.name, { version: fn.version, n });
    if (n > 0 && source && !this.snapshots.has(warmKey(fn))) this.snapshotLater(fn, source);
    const entry = this.snapshots.get(warmKey(fn));
    if (entry) this.trimSnapshot(entry);
  }

  /** The function has no replica floor any more (deleted, or its scale settings removed). */
  clearReady(name: string): void {
    this.floors.delete(name);
    for (const e of this.snapshots.values()) if (e.name === name) this.trimSnapshot(e);
  }

  /** Destroys idle ready clones beyond the snapshot's target, then tops it up to the target. */
  private trimSnapshot(entry: SnapshotEntry): void {
    const target = this.snapshotTarget(entry);
    while (entry.pool.length > target) {
      const v = entry.pool.pop()!;
      this.reserved -= v.memoryMiB;
      void v.session.destroy('fewer replicas asked for');
    }
    this.refillSnapshot(entry);
  }

  /**
   * Keeps VMs cloned from the snapshot ready and paused: snapshotTarget() or, when
   * more calls are waiting for one, that many; at most SNAPSHOT_REFILL_PARALLEL made at once.
   */
  private refillSnapshot(entry: SnapshotEntry): void {
    const template = entry.template;
    if (!template || this.closed || this.snapshots.get(entry.key) !== entry) return;
    // Calls already waiting count too: with closed-loop clients the measured rate is capped by how
    // fast clones are made, so Little's law alone would keep making them one at a time.
    const want = Math.max(this.snapshotTarget(entry), entry.waiters.length);
    if (entry.refilling >= SNAPSHOT_REFILL_PARALLEL || entry.pool.length + entry.refilling >= want) return;
    const needMiB = this.estimateMiB(entry.functionMiB);
    if (!this.fits(needMiB)) return;
    entry.refilling++;
    this.reserved += needMiB;
    this.snapshotWork++;
    const t0 = performance.now();
    let made = false;
    void (async () => {
      try {
        const session = await this.snapshotClone(entry.functionMiB, template);
        try {
          // Off the call path: TCG translates the invocation path in this QEMU process now.
          await session.warmup();
          await this.host.driver.pause(session.vm);
        } catch (err) {
          await session.destroy('snapshot VM could not be paused');
          throw err;
        }
        if (this.closed || this.snapshots.get(entry.key) !== entry) {
          await session.destroy('function snapshot dropped');
          this.reserved -= needMiB;
          return;
        }
        const item = { session, memoryMiB: needMiB };
        void session.vm.exited.then(() => {
          const i = entry.pool.indexOf(item);
          if (i >= 0) {
            entry.pool.splice(i, 1);
            this.reserved -= needMiB;
          }
        });
        const waiter = entry.waiters.shift();
        if (waiter) waiter(item);
        else entry.pool.push(item);
        made = true;
        entry.refillSeconds = entry.refillSeconds * 0.7 + ((performance.now() - t0) / 1000) * 0.3;
      } catch (err) {
        this.reserved -= needMiB;
        this.log.warn({ err, fn: entry.key }, 'could not prepare a VM from a function snapshot');
      } finally {
        this.snapshotWork--;
        entry.refilling--;
        this.refill();
        // Grow toward the target after a success only: a failing clone is not retried in a loop.
        if (made) this.refillSnapshot(entry);
      }
    })();
  }

  /**
   * Queues for the next clone a refill makes ready: `ready` resolves with it, or
   * with null after `waitMs` or `cancel()` (the caller then clones one itself).
   */
  private nextReadyClone(entry: SnapshotEntry, waitMs: number): { ready: Promise<ReadyClone | null>; cancel(): void } {
    let settle!: (item: ReadyClone | null) => void;
    const ready = new Promise<ReadyClone | null>((resolve) => (settle = resolve));
    const leave = (item: ReadyClone | null) => {
      clearTimeout(timer);
      const i = entry.waiters.indexOf(leave);
      if (i >= 0) entry.waiters.splice(i, 1);
      settle(item);
    };
    const timer = setTimeout(() => leave(null), waitMs);
    entry.waiters.push(leave);
    return { ready, cancel: () => leave(null) };
  }

  private async dropSnapshot(entry: SnapshotEntry, why: string): Promise<void> {
    if (this.snapshots.get(entry.key) !== entry) return;
    this.snapshots.delete(entry.key);
    this.unhold(entry.key, entry);
    this.log.info({ fn: entry.key, why }, 'function snapshot dropped');
    const vms = entry.pool.splice(0);
    for (const v of vms) this.reserved -= v.memoryMiB;
    await Promise.all(vms.map((v) => v.session.destroy(`function snapshot dropped: ${why}`)));
    await this.host.dropFunctionTemplate(entry.key);
  }

  async close(): Promise<void> {
    this.closed = true;
    const all: Promise<void>[] = this.pool.splice(0).map((p) => p.session.destroy('worker shutting down'));
    for (const e of this.snapshots.values()) for (const v of e.pool.splice(0)) all.push(v.session.destroy('worker shutting down'));
    for (const list of this.warm.values()) {
      for (const w of list.splice(0)) {
        clearTimeout(w.timer);
        if (w.linger) clearTimeout(w.linger);
        if (w.reclaim) clearTimeout(w.reclaim);
        all.push(w.session.destroy('worker shutting down'));
      }
    }
    await Promise.all(all);
    await this.host.close();
  }

  /**
   * Wraps the path that obtains a VM with the release policy. `memoryMiB` is
   * already counted in `reserved` (when a pool or warm VM was made, or by the
   * caller for a cold start) and is given back when the VM is destroyed.
   * `taken` is the pool or warm VM this reservation took out of its list.
   */
  private reservation(
    memoryMiB: number,
    obtain: (source: FunctionSource) => Promise<Omit<Lease, 'release'>>,
    taken: GuestSession | null,
  ): Reservation {
    let settled = false;
    const giveBack = () => {
      this.reserved -= memoryMiB;
      this.refill();
    };
    return {
      cancel: () => {
        if (settled) return;
        settled = true;
        if (taken) void taken.destroy('call abandoned before it started');
        giveBack();
      },
      acquire: async (fn, source) => {
        settled = true;
        this.busy++;
        let lease: Omit<Lease, 'release'>;
        try {
          lease = await obtain(source);
        } catch (err) {
          if (!vmFailedToStart(err) || this.closed) {
            this.busy--;
            giveBack();
            throw err;
          }
          // The VM died or never came up before the handler was called (a host fault; the guest
          // has no network, so nothing of the call can have escaped it): once more on a fresh VM.
          this.log.warn({ err, fn: warmKey(fn) }, 'a VM failed while starting; retrying the start once on a fresh VM');
          try {
            lease = await this.startFresh(fn, source);
          } catch (err2) {
            this.busy--;
            giveBack();
            throw err2;
          }
        }
        this.refill();
        this.holdVm(fn, lease.session);
        return {
          ...lease,
          release: async (healthy) => {
            this.busy--;
            if (healthy && fn.isolation === 'per-function' && !this.closed) {
              if ((this.opts.warmLingerMs ?? 0) > 0 && lease.session.vm.state !== 'exited') {
                this.keepWarm(fn, lease.session, memoryMiB);
                return;
              }
              try {
                await this.host.driver.pause(lease.session.vm);
                this.keepWarm(fn, lease.session, memoryMiB);
                return;
              } catch (err) {
                this.log.warn({ err, vm: lease.session.vm.id }, 'could not pause a warm VM; destroying it');
              }
            }
            await lease.session.destroy(healthy ? 'invocation finished' : 'VM failed');
            giveBack();
          },
        };
      },
    };
  }

  /** Keeps a VM for its function version's next call; one still running is paused after the linger. */
  private keepWarm(fn: FunctionRecord, session: GuestSession, memoryMiB: number): void {
    const key = warmKey(fn);
    const w: WarmVm = {
      session,
      memoryMiB,
      key,
      timer: setTimeout(() => void this.evict(w, 'idle TTL passed'), this.opts.warmTtlMs),
      linger: null,
      pausing: null,
      reclaim: null,
    };
    w.timer.unref();
    const reclaimMs = this.opts.idleReclaimMs ?? 0;
    if (reclaimMs > 0 && this.host.driver.reclaim) {
      w.reclaim = setTimeout(() => void this.reclaimIdle(w), (session.vm.state === 'running' ? this.opts.warmLingerMs ?? 0 : 0) + reclaimMs);
      w.reclaim.unref();
    }
    if (session.vm.state === 'running') {
      w.linger = setTimeout(() => {
        w.linger = null;
        w.pausing = this.host.driver.pause(session.vm).then(
          () => {
            w.pausing = null;
          },
          (err: unknown) => {
            w.pausing = null;
            this.log.warn({ err, vm: session.vm.id }, 'could not pause a warm VM; destroying it');
            void this.evict(w, 'could not be paused');
            // Taken meanwhile: the call that took it fails to start and is retried on a fresh VM.
            throw err;
          },
        );
        w.pausing.catch(() => {});
      }, this.opts.warmLingerMs);
      w.linger.unref();
    }
    const list = this.warm.get(key) ?? [];
    list.push(w);
    this.warm.set(key, list);
    this.idleOrder.add(w);
  }

  private async evict(w: WarmVm, why: string): Promise<void> {
    const list = this.warm.get(w.key);
    const i = list?.indexOf(w) ?? -1;
    if (i < 0) return; // taken meanwhile
    list!.splice(i, 1);
    if (list!.length === 0) this.warm.delete(w.key);
    this.idleOrder.delete(w);
    clearTimeout(w.timer);
    if (w.linger) clearTimeout(w.linger);
    if (w.reclaim) clearTimeout(w.reclaim);
    this.reserved -= w.memoryMiB;
    await w.session.destroy(why);
    this.refill();
  }

  /** An idle paused warm VM gives its private memory back (it stays warm: the next call faults it in). */
  private async reclaimIdle(w: WarmVm): Promise<void> {
    w.reclaim = null;
    if (this.reclaimOff || !this.idleOrder.has(w) || w.pausing || w.session.vm.state !== 'paused') return;
    try {
      const bytes = await this.host.driver.reclaim!(w.session.vm);
      this.opts.onReclaim?.(bytes);
    } catch (err) {
      if (/not permitted/i.test((err as Error).message)) {
        // process_madvise on another process needs CAP_SYS_NICE: a worker without it cannot reclaim.
        this.reclaimOff = true;
        this.log.warn({ err }, 'idle reclaim is off: the worker may not page out its VMs (needs CAP_SYS_NICE, e.g. run as root)');
        return;
      }
      // Taken or gone meanwhile, or the helper failed: the VM stays as it was.
      this.log.debug({ err, vm: w.session.vm.id }, 'idle reclaim failed');
    }
  }

  /** Room for `needMiB` more: within the memory budget and, when guarded, above the host's MemAvailable reserve. */
  private fits(needMiB: number): boolean {
    return this.reserved + needMiB <= this.opts.memoryBudgetMiB && (this.opts.hostMemory?.fits(needMiB) ?? true);
  }

  /** Frees memory by evicting idle warm VMs, oldest first; false when it still does not fit. */
  private makeRoom(needMiB: number): boolean {
    for (const w of this.idleOrder) {
      if (this.fits(needMiB)) break;
      // What the host gets back: the VM's measured PSS (its estimate when unknown).
      const kib = this.host.driver.memoryPssKiB(w.session.vm) ?? null;
      const done = this.evict(w, 'memory needed for another call');
      this.opts.hostMemory?.freeing(kib !== null ? kib / 1024 : w.memoryMiB, done);
    }
    if (this.fits(needMiB)) return true;
    this.refusal =
      this.reserved + needMiB > this.opts.memoryBudgetMiB
        ? 'host memory budget is full'
        : `host memory is short: MemAvailable would fall below the reserve (MAYFLY_HOST_MEMORY_RESERVE_MB=${this.opts.hostMemory?.reserveMiB})`;
    return false;
  }

  /** Why the last `reserve` that returned null refused. */
  lastRefusal(): string {
    return this.refusal;
  }

  private reportRefill(t0: number, ok: boolean): void {
    try {
      this.opts.onRefill?.({ seconds: (performance.now() - t0) / 1000, ok });
    } catch {
      // an observer must not break the pool
    }
  }

  /**
   * Keeps `poolTarget()` fresh VMs ready and paused (clones resumed once so
   * their reseed is done and TCG has translated the agent's idle path), one
   * at a time: the refill rate is bounded by design.
   */
  private refill(): void {
    if (this.refilling || this.closed) return;
    if (this.pool.length + this.booting >= this.poolTarget()) return;
    const needMiB = this.estimateMiB(this.opts.poolFunctionMiB);
    if (!this.fits(needMiB)) return;
    this.refilling = true;
    this.booting++;
    this.reserved += needMiB;
    const t0 = performance.now();
    void (async () => {
      try {
        const { session } = await this.freshVm(this.opts.poolFunctionMiB);
        try {
          await session.warmup();
          await this.host.driver.pause(session.vm);
        } catch (err) {
          await session.destroy('pool VM could not be paused');
          throw err;
        }
        this.refills++;
        this.refillSeconds = this.refillSeconds * 0.7 + ((performance.now() - t0) / 1000) * 0.3;
        this.reportRefill(t0, true);
        if (this.opts.clones) this.measure(session);
        const entry = { session, memoryMiB: needMiB };
        if (this.closed) {
          await session.destroy('worker shutting down');
          this.reserved -= needMiB;
        } else {
          // A pooled VM that dies while waiting leaves the pool at once.
          void session.vm.exited.then(() => {
            const i = this.pool.indexOf(entry);
            if (i >= 0) {
              this.pool.splice(i, 1);
              this.reserved -= needMiB;
              this.refill();
            }
          });
          this.pool.push(entry);
        }
      } catch (err) {
        this.reserved -= needMiB;
        this.log.error({ err }, 'pool refill failed');
        this.reportRefill(t0, false);
        await new Promise((r) => setTimeout(r, 1000));
      } finally {
        this.booting--;
        this.refilling = false;
        this.refill();
      }
    })();
  }
}

/**
 * A start failure that is the host's, not the function's: the VM could not be
 * made, crashed or never reported ready (INIT_FAILED / INIT_TIMEOUT are the function's).
 */
export function vmFailedToStart(err: unknown): boolean {
  if (err instanceof InvocationError) return err.code === 'VM_CRASHED' || err.code === 'BOOT_TIMEOUT';
  if (err instanceof DriverError) return err.code === 'VM_START_FAILED' || err.code === 'VM_GONE' || err.code === 'VM_CONTROL_FAILED';
  return false;
}

function initOf(fn: FunctionRecord, source: FunctionSource) {
  return {
    functionName: fn.name,
    code: source.code,
    handler: fn.handler,
    env: fn.envVars,
    memoryLimitInMB: fn.memoryMiB,
    ...(Object.keys(source.secrets).length ? { secrets: source.secrets } : {}),
    ...(fn.rootfs ? { watchdog: true } : {}),
  };
}
