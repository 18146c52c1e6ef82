/**
 * What a worker can send again when a gateway lost replies (SUBJECTS.resend:
 * its NATS node died while results were on their way): the encoded results of
 * sync calls it finished in the last KEEP_MS, and the CallAccepted of the calls
 * it still runs. Bounded: at most MAX_KEPT results, the oldest dropped first.
 */
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { resendRequestSchema, SUBJECTS, type CallAccepted } from '../contracts/bus.js';
import { jsonCodec } from '../lib/nats.js';

export const KEEP_MS = 60_000;
export const MAX_KEPT = 5000;

export class RecentResults {
  private readonly results = new Map<string, { replyTo: string; data: Uint8Array; at: number }>();
  private readonly running = new Map<string, string | undefined>();
  private readonly sub: Subscription;

  constructor(
    private readonly nc: NatsConnection,
    private readonly hostId: string,
    private readonly now: () => number = Date.now,
  ) {
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
    this.results.delete(callId);
    this.results.set(callId, { replyTo, data, at: this.now() });
    const old = this.now() - KEEP_MS;
    for (const [id, r] of this.results) {
      if (r.at >= old && this.results.size <= MAX_KEPT) break;
      this.results.delete(id);
    }
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

  stop(): void {
    this.sub.unsubscribe();
  }
}
