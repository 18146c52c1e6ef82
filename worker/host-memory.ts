/**
 * The host's own view of free memory (issue 19): admission by what the host
 * really has, not only by what the worker has reserved. The memory budget
 * (MAYFLY_MEMORY_BUDGET_MB) caps the worker's estimates; this guard keeps
 * MemAvailable above a reserve whatever the estimates say, so a host packed
 * with paused VMs (whose real footprint differs from any estimate, e.g. when
 * idle VMs were paged out to zram) never overcommits into the OOM killer.
 */
import fs from 'node:fs';

/** /proc/meminfo's MemAvailable in MiB, or null where there is none. */
export function readMemAvailableMiB(): number | null {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

export class HostMemory {
  private cached: { at: number; mib: number | null } | null = null;
  /** MiB that evictions already started will give back (MemAvailable lags their SIGKILL and reap). */
  private pendingFreeMiB = 0;

  constructor(
    readonly reserveMiB: number,
    private readonly read: () => number | null = readMemAvailableMiB,
    /** /proc/meminfo is read at most this often (admission runs per call). */
    private readonly cacheMs = 100,
  ) {}

  availableMiB(): number | null {
    const now = Date.now();
    if (!this.cached || now - this.cached.at >= this.cacheMs) this.cached = { at: now, mib: this.read() };
    return this.cached.mib === null ? null : this.cached.mib + this.pendingFreeMiB;
  }

  /** True when `needMiB` more leaves at least the reserve available (always true where MemAvailable is unknown). */
  fits(needMiB: number): boolean {
    const avail = this.availableMiB();
    return avail === null || avail - needMiB >= this.reserveMiB;
  }

  /** Counts memory an eviction will free until the host shows it (the next fresh reading after it is done). */
  freeing(mib: number, done: Promise<unknown>): void {
    this.pendingFreeMiB += mib;
    void done.finally(() => {
      this.pendingFreeMiB -= mib;
      this.cached = null;
    });
  }
}
