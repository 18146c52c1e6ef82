/**
 * Which worker hosts are alive, from their heartbeats (SUBJECTS.heartbeat), for
 * a process that waits on calls running on other hosts (the gateway for sync
 * calls, the scheduler for async attempts). `whenLost(host)` settles once that
 * host has not beaten for the host TTL (MAYFLY_HOST_TTL_MS): the host died, or
 * it is cut off the bus and its worker gives the call up (worker/bus-cutoff.ts).
 *
 * A host this process has not heard from yet gets one TTL of grace from the
 * moment it is first watched (a gateway that just started has seen no beats).
 * While this process itself is off the bus (`ownBusLostForMs`, lib/bus-probe.ts)
 * it hears no heartbeats and judges no host; when it is back, every host gets
 * the time it was away added (no host is lost for a gap that was ours).
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { heartbeatSchema, SUBJECTS } from '../contracts/bus.js';
import { jsonCodec } from './nats.js';

export interface LostWatch {
  /** Resolves with the host id when the host is lost; never rejects. */
  promise: Promise<string>;
  cancel(): void;
}

/** Own bus silent longer than this: heartbeats are not judged. */
const OWN_BUS_PAUSE_MS = 1500;

export class HostWatch {
  private readonly lastBeat = new Map<string, number>();
  private readonly waiters = new Map<string, Set<(host: string) => void>>();
  private readonly sub: Subscription | null;
  private readonly timer: NodeJS.Timeout;
  private readonly now: () => number;
  private readonly ownBusLostForMs: () => number;
  private pausedAt: number | null = null;

  /** With `nc`, listens to heartbeats itself; without it, the owner calls saw() for each beat (tests). */
  constructor(
    private readonly ttlMs: number,
    nc?: NatsConnection,
    opts: { now?: () => number; ownBusLostForMs?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.ownBusLostForMs = opts.ownBusLostForMs ?? (() => 0);
    this.sub = nc
      ? nc.subscribe(SUBJECTS.heartbeat, {
          callback: (err, msg) => {
            if (err) return;
            try {
              const hb = heartbeatSchema.safeParse(jsonCodec.decode(msg.data));
              if (hb.success) this.saw(hb.data.hostId);
            } catch {
              // not JSON: ignored like any invalid heartbeat
            }
          },
        })
      : null;
    // Checked a few times per TTL: a lost host is noticed within TTL + TTL/4.
    this.timer = setInterval(() => this.check(), Math.max(50, Math.min(1000, Math.floor(ttlMs / 4))));
    this.timer.unref();
  }

  saw(hostId: string): void {
    this.lastBeat.set(hostId, this.now());
  }

  alive(hostId: string): boolean {
    const at = this.lastBeat.get(hostId);
    return at !== undefined && this.now() - at <= this.ttlMs;
  }

  /** Settles when `hostId` stops heartbeating for the TTL (at once when it is known and already past it). */
  whenLost(hostId: string): LostWatch {
    if (!this.lastBeat.has(hostId)) this.lastBeat.set(hostId, this.now()); // grace: see the file comment
    let resolve!: (host: string) => void;
    const promise = new Promise<string>((r) => (resolve = r));
    let set = this.waiters.get(hostId);
    if (!set) this.waiters.set(hostId, (set = new Set()));
    set.add(resolve);
    const cancel = () => {
      const s = this.waiters.get(hostId);
      s?.delete(resolve);
      if (s?.size === 0) this.waiters.delete(hostId);
    };
    if (!this.alive(hostId)) queueMicrotask(() => this.check());
    return { promise, cancel };
  }

  /** Calls waiting on each host (tests and metrics). */
  watching(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }

  check(): void {
    if (this.ownBusLostForMs() > OWN_BUS_PAUSE_MS) {
      this.pausedAt ??= this.now();
      return;
    }
    if (this.pausedAt !== null) {
      const away = this.now() - this.pausedAt + OWN_BUS_PAUSE_MS;
      for (const [id, at] of this.lastBeat) this.lastBeat.set(id, at + away);
      this.pausedAt = null;
    }
    const old = this.now() - 10 * this.ttlMs;
    for (const [hostId, at] of this.lastBeat) if (at < old && !this.waiters.has(hostId)) this.lastBeat.delete(hostId);
    for (const [hostId, set] of this.waiters) {
      if (this.alive(hostId)) continue;
      this.waiters.delete(hostId);
      for (const resolve of set) resolve(hostId);
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }
}
