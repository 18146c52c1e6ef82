/**
 * A worker cut off the bus (no answer from NATS for MAYFLY_BUS_LOST_MS) cannot
 * report results, and the schedulers and gateways give its calls up after the
 * host TTL (HOST_LOST: async calls run again elsewhere). So it stops admitting
 * work and ends the calls it runs, rather than finish them for nobody, and
 * admits again once the bus answers.
 */
import type { BusProbe } from '../lib/bus-probe.js';
import type { Logger } from '../lib/logger.js';

export interface Cutoff {
  /** True while the worker counts as cut off the bus. */
  readonly cut: boolean;
  stop(): void;
}

export function watchBusCutoff(opts: {
  probe: Pick<BusProbe, 'lostForMs'>;
  limitMs: number;
  /** Ends what runs (called once per cut). */
  onCut: (lostForMs: number) => void;
  log: Logger;
  checkMs?: number;
}): Cutoff {
  let cut = false;
  const timer = setInterval(() => {
    const lost = opts.probe.lostForMs();
    if (!cut && lost > opts.limitMs) {
      cut = true;
      opts.log.warn({ lostForMs: lost }, 'cut off the bus: refusing work and ending the calls running here (their results cannot be reported)');
      opts.onCut(lost);
    } else if (cut && lost <= opts.limitMs) {
      cut = false;
      opts.log.info('the bus answers again: admitting work');
    }
  }, opts.checkMs ?? 250);
  timer.unref();
  return {
    get cut() {
      return cut;
    },
    stop: () => clearInterval(timer),
  };
}
