/**
 * The function records a gateway serves calls from, kept in memory by a watch
 * on the functions KV bucket, so a call does not pay a JetStream round trip to
 * find its function. Entries carry their KV revision and only a newer revision
 * replaces one, whichever path (the watch, or `refresh` after this gateway's own
 * deploy) brings it. A name the cache has not seen is read from the bucket (a
 * function created through another gateway a moment ago is found). While the
 * watch is down every lookup reads the bucket.
 *
 * Staleness: an update made through another gateway reaches this one within the
 * watch's delivery time (about a millisecond on one NATS server); a deploy
 * through this gateway is seen by its next call (refresh before the 202).
 */
import { Kvm, type KV, type KvEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { STORES } from '../contracts/bus.js';
import { functionRecordSchema, type FunctionRecord } from '../contracts/functions.js';
import { kvReplicas } from './js-replicas.js';

interface Cached {
  revision: number;
  record: FunctionRecord | null;
}

export class FunctionCache {
  private readonly entries = new Map<string, Cached>();
  private live = false;
  private stopped = false;
  private watcher: { stop(): void } | null = null;

  private constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection): Promise<FunctionCache> {
    const kv = await new Kvm(nc).create(STORES.functions, { history: 1, ...kvReplicas(nc) });
    const cache = new FunctionCache(kv);
    await cache.watch();
    return cache;
  }

  /** The function, from memory when the watch is live; null when there is none. */
  async get(name: string): Promise<FunctionRecord | null> {
    const hit = this.entries.get(name);
    if (hit && this.live) return hit.record;
    return this.refresh(name);
  }

  /** Reads one function from the bucket into the cache (after a deploy, update or delete here). */
  async refresh(name: string): Promise<FunctionRecord | null> {
    const e = await this.kv.get(name);
    if (!e) {
      this.entries.delete(name);
      return null;
    }
    this.apply(e);
    return this.entries.get(name)?.record ?? null;
  }

  stop(): void {
    this.stopped = true;
    this.live = false;
    this.watcher?.stop();
  }

  private apply(e: KvEntry): void {
    const prev = this.entries.get(e.key);
    if (prev && prev.revision > e.revision) return;
    let record: FunctionRecord | null = null;
    if (e.operation === 'PUT') {
      const parsed = functionRecordSchema.safeParse(e.json());
      record = parsed.success ? parsed.data : null;
    }
    this.entries.set(e.key, { revision: e.revision, record });
  }

  private async watch(): Promise<void> {
    const it = await this.kv.watch();
    this.watcher = it;
    let initial = true;
    void (async () => {
      try {
        for await (const e of it) {
          this.apply(e);
          // The watch first replays the current values; from the first update on, the cache is complete.
          if (initial && (e.isUpdate || e.delta === 0)) {
            initial = false;
            this.live = true;
          }
        }
      } catch {
        // fall through: the watch ended
      }
      this.live = false;
      if (!this.stopped) setTimeout(() => void this.watch().catch(() => {}), 1000).unref();
    })();
    // An empty bucket replays nothing: the watch is complete as soon as it is set up.
    const status = await this.kv.status().catch(() => null);
    if (status && status.values === 0) this.live = true;
  }
}
