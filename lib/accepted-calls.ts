/**
 * For a process that waits on a call it did not place itself (the gateway's
 * sync calls, one hop or through the scheduler): learns which host admitted
 * the call from the worker's CallAccepted (InvokeRequest.acceptedTo), and
 * settles `lost` when that host stops heartbeating (HostWatch). One
 * subscription per process; one subject token per call (call ids may hold dots).
 * When the connection comes back after its NATS node died, it asks the workers
 * to send again the results and acceptances of the calls still waiting.
 */
import { createInbox, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { callAcceptedSchema, SUBJECTS, type ResendRequest } from '../contracts/bus.js';
import type { HostWatch, LostWatch } from './host-watch.js';
import { jsonCodec } from './nats.js';

export interface TrackedCall {
  /** Put this in the InvokeRequest's `acceptedTo`. */
  acceptedTo: string;
  /** Resolves with the host id once the host that admitted the call is lost; never rejects. */
  lost: Promise<string>;
  /** Resolves with the host id when a worker says it admitted the call. */
  accepted: Promise<string>;
  /** The call is answered: stop watching. */
  done(): void;
}

interface Entry {
  callId: string;
  lostTo: (host: string) => void;
  acceptedBy: (host: string) => void;
  watch?: LostWatch;
}

export class AcceptedCalls {
  private readonly prefix = createInbox('_MAYFLY_ACCEPTED');
  private readonly entries = new Map<string, Entry>();
  private readonly sub: Subscription;
  private next = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly hosts: HostWatch,
  ) {
    // Back on the bus after its node died: replies published meanwhile are gone; ask the workers again.
    void (async () => {
      for await (const s of nc.status()) if (s.type === 'reconnect') this.askResend();
    })().catch(() => {});
    this.sub = nc.subscribe(`${this.prefix}.*`, {
      callback: (err, msg) => {
        if (err) return;
        const entry = this.entries.get(msg.subject.slice(this.prefix.length + 1));
        if (!entry || entry.watch) return;
        try {
          const a = callAcceptedSchema.safeParse(jsonCodec.decode(msg.data));
          if (!a.success || a.data.callId !== entry.callId) return;
          entry.acceptedBy(a.data.hostId);
          entry.watch = this.hosts.whenLost(a.data.hostId);
          void entry.watch.promise.then(entry.lostTo);
        } catch {
          // not JSON: ignored
        }
      },
    });
  }

  track(callId: string): TrackedCall {
    const token = (this.next++).toString(36);
    let lostTo!: (host: string) => void;
    const lost = new Promise<string>((r) => (lostTo = r));
    let acceptedBy!: (host: string) => void;
    const accepted = new Promise<string>((r) => (acceptedBy = r));
    this.entries.set(token, { callId, lostTo, acceptedBy });
    return {
      acceptedTo: `${this.prefix}.${token}`,
      lost,
      accepted,
      done: () => {
        this.entries.get(token)?.watch?.cancel();
        this.entries.delete(token);
      },
    };
  }

  /** Asks every worker to send again what it has of the calls still waiting (SUBJECTS.resend). */
  askResend(): void {
    const callIds = [...new Set([...this.entries.values()].map((e) => e.callId))];
    for (let i = 0; i < callIds.length; i += 1000) {
      this.nc.publish(SUBJECTS.resend, jsonCodec.encode({ callIds: callIds.slice(i, i + 1000) } satisfies ResendRequest));
    }
  }

  /** Calls being tracked (tests). */
  size(): number {
    return this.entries.size;
  }

  stop(): void {
    this.sub.unsubscribe();
    for (const e of this.entries.values()) e.watch?.cancel();
    this.entries.clear();
  }
}
