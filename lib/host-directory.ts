/**
 * The worker hosts a process has heard from: the last heartbeat of each
 * (SUBJECTS.heartbeat), forgotten after the host TTL. Read-only; used by the
 * gateway's GET /system/hosts (the console's Hosts and VMs page).
 */
import { heartbeatSchema, SUBJECTS, type Heartbeat } from '../contracts/bus.js';
import { jsonCodec, type NatsConnection } from './nats.js';

export interface HostView extends Heartbeat {
  /** Milliseconds since this process received the host's last heartbeat. */
  ageMs: number;
}

export class HostDirectory {
  private readonly seen = new Map<string, { hb: Heartbeat; at: number }>();

  constructor(private readonly ttlMs: number) {}

  /** Starts listening on the bus; returns the function that stops it. */
  subscribe(nc: NatsConnection): () => void {
    const sub = nc.subscribe(SUBJECTS.heartbeat, {
      callback: (err, msg) => {
        if (err) return;
        try {
          this.saw(heartbeatSchema.parse(jsonCodec.decode(msg.data)));
        } catch {
          // an invalid heartbeat is ignored, as the scheduler does
        }
      },
    });
    return () => sub.unsubscribe();
  }

  saw(hb: Heartbeat, now = Date.now()): void {
    this.seen.set(hb.hostId, { hb, at: now });
  }

  /** Live hosts, sorted by id. */
  list(now = Date.now()): HostView[] {
    const out: HostView[] = [];
    for (const [id, { hb, at }] of this.seen) {
      if (now - at > this.ttlMs) this.seen.delete(id);
      else out.push({ ...hb, ageMs: now - at });
    }
    return out.sort((a, b) => a.hostId.localeCompare(b.hostId));
  }
}
