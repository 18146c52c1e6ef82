/**
 * What a worker can send again when a gateway lost replies (SUBJECTS.resend:
 * its NATS node died while results were on their way): the encoded results of
 * sync calls it finished in the last KEEP_MS, and the CallAccepted of the calls
 * it still runs. Bounded: at most MAX_KEPT results and MAX_KEPT_BYTES, the oldest dropped first.
 *
 * The same when the worker's own connection comes back (its node died): results it
 * published in the last RECONNECT_RESEND_MS may have died with the node, so it
 * sends them again, and the acceptances of what it runs. A gateway drops a reply
 * to a request it no longer waits for, so a second copy is harmless.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { resendRequestSchema, SUBJECTS, type CallAccepted } from '../contracts/bus.js';
import { jsonCodec } from '../lib/nats.js';

export const KEEP_MS = 60_000;
export const MAX_KEPT = 5000;
export const MAX_KEPT_BYTES = 64 * 1024 * 1024;
export const RECONNECT_RESEND_MS = 10_000;

export class RecentResults {
  private readonly results = new Map<string, { replyTo: string; data: Uint8Array; at: number }>();
  private readonly running = new Map<string, string | undefined>();
  private bytes = 0;
  private readonly sub: Subscription;

  constructor(
    private readonly nc: NatsConnection,
    private readonly hostId: string,
    private readonly now: () => number = Date.now,
  ) {
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'reconnect') this.resendRecent();
    })().catch(() => {});
    this.sub = nc.subscribe(SUBJECTS.resend, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const req = resendRequestSchema.safeParse(jsonCodec.decode(msg.data));
          if (req.success) this.resend(req.data.callIds);
        } catch {
          // not JSON: ignored
        }
      },
    });
  }

  started(callId: string, acceptedTo: string | undefined): void {
    this.running.set(callId, acceptedTo);
  }

  /** The call ended; `replyTo`/`data`: its published sync result, kept for a resend. */
  finished(callId: string, replyTo?: string, data?: Uint8Array): void {
    this.running.delete(callId);
    if (!replyTo || !data) return;
    this.drop(callId);
    this.results.set(callId, { replyTo, data, at: this.now() });
    this.bytes += data.length;
    const old = this.now() - KEEP_MS;
    for (const [id, r] of this.results) {
      if (r.at >= old && this.results.size <= MAX_KEPT && this.bytes <= MAX_KEPT_BYTES) break;
      this.drop(id);
    }
  }

  private drop(callId: string): void {
    const r = this.results.get(callId);
    if (!r) return;
    this.bytes -= r.data.length;
    this.results.delete(callId);
  }

  /** Publishes again what it has of these calls; returns how many messages it sent. */
  resend(callIds: string[]): number {
    let sent = 0;
    const old = this.now() - KEEP_MS;
    for (const id of callIds) {
      const r = this.results.get(id);
      if (r && r.at >= old) {
        this.nc.publish(r.replyTo, r.data);
        sent++;
      }
      const acceptedTo = this.running.get(id);
      if (acceptedTo) {
        this.nc.publish(acceptedTo, jsonCodec.encode({ callId: id, hostId: this.hostId } satisfies CallAccepted));
        sent++;
      }
    }
    return sent;
  }

  /** After a reconnect: the results of the last RECONNECT_RESEND_MS and every running call's acceptance. */
  resendRecent(): number {
    const since = this.now() - RECONNECT_RESEND_MS;
    return this.resend([...[...this.results].filter(([, r]) => r.at >= since).map(([id]) => id), ...this.running.keys()]);
  }

  stop(): void {
    this.sub.unsubscribe();
  }
}
