/**
 * How long this process has been cut off the bus: it pings its NATS server (a
 * flush) every PROBE_MS and remembers the last answer. Connected and answering:
 * lostForMs() stays below PROBE_MS plus a round trip. Disconnected, reconnecting
 * or stalled (a host cut off the network: the socket stays open): it grows.
 * The gateway's /healthz and the worker's cut-off compare it with MAYFLY_BUS_LOST_MS.
 */
import type { NatsConnection } from '@nats-io/transport-node';

export const PROBE_MS = 500;

export class BusProbe {
  private lastOk: number;
  private pending = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly nc: NatsConnection,
    private readonly now: () => number = Date.now,
  ) {
    this.lastOk = now();
    this.timer = setInterval(() => this.probe(), PROBE_MS);
    this.timer.unref();
  }

  private probe(): void {
    if (this.pending || this.nc.isClosed()) return;
    this.pending = true;
    this.nc.flush().then(
      () => {
        this.lastOk = this.now();
        this.pending = false;
      },
      () => {
        this.pending = false;
      },
    );
  }

  /** Time since the server last answered a ping. */
  lostForMs(): number {
    return this.nc.isClosed() ? Number.POSITIVE_INFINITY : this.now() - this.lastOk;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
