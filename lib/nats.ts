/**
 * NATS connection for the services: named, reconnecting forever (to any server of
 * the cluster), waiting for the server at start. `url` may list several servers,
 * comma-separated (`nats://10.0.0.1:4222,nats://10.0.0.2:4222`): the client picks
 * one and, when it dies, reconnects to another and resubscribes.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { setJsReplicas } from './js-replicas.js';

export type { NatsConnection };

/**
 * Client pings: a connection whose server stops answering (a host cut off the network, not a
 * closed socket) is declared stale after PING_INTERVAL_MS × MAX_PINGS_OUT and reconnected elsewhere.
 */
export const PING_INTERVAL_MS = 2000;
export const MAX_PINGS_OUT = 2;

/** The servers of a MAYFLY_NATS_URL value: comma- or space-separated URLs. */
export function natsServers(url: string): string[] {
  const servers = url
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter(Boolean);
  if (servers.length === 0) throw new Error('MAYFLY_NATS_URL names no server; give one or more nats:// URLs, comma-separated');
  return servers;
}

/** `jsReplicas`: MAYFLY_JS_REPLICAS for the streams and stores created through this connection (lib/js-replicas.ts). */
export async function connectNats(url: string, name: string, opts: { jsReplicas?: number; waitMs?: number } = {}): Promise<NatsConnection> {
  const waitMs = opts.waitMs ?? 30_000;
  const deadline = Date.now() + waitMs;
  const servers = natsServers(url);
  for (;;) {
    try {
      const nc = await connect({
        servers,
        name,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        pingInterval: PING_INTERVAL_MS,
        maxPingOut: MAX_PINGS_OUT,
      });
      setJsReplicas(nc, opts.jsReplicas ?? 1);
      return nc;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`cannot reach NATS at ${url}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

export const jsonCodec = {
  encode: (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v)),
  decode: (b: Uint8Array): unknown => JSON.parse(new TextDecoder().decode(b)),
};

/** Settles each time the connection is back after a disconnect (its node died: it is on another now). */
export class Reconnects {
  private waiters: Array<() => void> = [];
  private stopped = false;

  constructor(nc: NatsConnection) {
    void (async () => {
      for await (const s of nc.status()) {
        if (this.stopped) break;
        if (s.type !== 'reconnect') continue;
        const w = this.waiters;
        this.waiters = [];
        for (const r of w) r();
      }
    })().catch(() => {});
  }

  /** The next reconnect; cancel() when no longer waiting (or the waiter stays until a reconnect). */
  next(): { promise: Promise<'reconnected'>; cancel(): void } {
    let waiter!: () => void;
    const promise = new Promise<'reconnected'>((r) => (waiter = () => r('reconnected')));
    this.waiters.push(waiter);
    return { promise, cancel: () => (this.waiters = this.waiters.filter((w) => w !== waiter)) };
  }

  stop(): void {
    this.stopped = true;
  }
}
