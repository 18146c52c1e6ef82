/**
 * Offers this worker accepted recently, by their reply subject (one per call
 * attempt). When NATS loses the worker's "accepted" answer (its node died, or it
 * restarted), the scheduler hears nothing and offers the same attempt again; it
 * must not run twice. A repeated offer is answered "accepted" without running
 * the call again: the first run's result goes (or went) to the same reply
 * subject, where async results are stored by JetStream (lib/async-results.ts).
 * Bounded: entries older than KEEP_MS or beyond MAX_KEPT are dropped, oldest first.
 */
export const KEEP_MS = 10 * 60_000;
export const MAX_KEPT = 20_000;

export class AcceptedOffers {
  private readonly at = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** True when an offer with this reply subject was accepted within KEEP_MS. */
  has(replyTo: string): boolean {
    const t = this.at.get(replyTo);
    return t !== undefined && this.now() - t <= KEEP_MS;
  }

  add(replyTo: string): void {
    const now = this.now();
    this.at.delete(replyTo);
    this.at.set(replyTo, now);
    // Insertion order is age order: drop from the front.
    for (const [k, t] of this.at) {
      if (this.at.size <= MAX_KEPT && now - t <= KEEP_MS) break;
      this.at.delete(k);
    }
  }
}
