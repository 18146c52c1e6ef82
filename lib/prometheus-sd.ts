/**
 * Prometheus file-based service discovery (`file_sd_configs`) written by the
 * platform: the scheduler keeps the /metrics address of every live gateway,
 * scheduler (announcements on METRICS_SUBJECTS.announce) and worker (heartbeat
 * `metricsUrl`) and writes them as a targets file whenever the file differs
 * (checked every second). Prometheus watches the file and picks changes up
 * within seconds.
 *
 * Each target becomes its own group, so its path and scheme travel with it
 * (`__metrics_path__`, `__scheme__`), labelled `service` (gateway, scheduler,
 * worker) and `mayfly_id` (the worker's host id, or `<service>-<hostname>-<pid>`).
 * A target not refreshed within the TTL is dropped. The file is replaced
 * atomically (write + rename), so Prometheus never reads half of it, and
 * replicas writing the same file write the same bytes.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { MayflyConfig } from '../contracts/config.js';
import type { MetricsService } from '../contracts/metrics.js';

export interface ScrapeTarget {
  service: MetricsService;
  id: string;
  /** Full URL of the /metrics endpoint. */
  url: string;
}

export interface FileSdGroup {
  targets: string[];
  labels: Record<string, string>;
}

/** The file_sd group of one target; null when the URL is not http(s). */
export function targetGroup(t: ScrapeTarget): FileSdGroup | null {
  let u: URL;
  try {
    u = new URL(t.url);
  } catch {
    return null;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  const scheme = u.protocol.slice(0, -1);
  const port = u.port || (scheme === 'https' ? '443' : '80');
  return {
    targets: [`${u.hostname}:${port}`],
    labels: {
      __metrics_path__: u.pathname || '/metrics',
      __scheme__: scheme,
      service: t.service,
      mayfly_id: t.id,
    },
  };
}

const SERVICE_ORDER: Record<MetricsService, number> = { gateway: 0, scheduler: 1, worker: 2 };

/** The targets file's content: stable order (service, then id), one group per target, duplicates by URL removed. */
export function renderTargets(targets: Iterable<ScrapeTarget>): string {
  const byUrl = new Map<string, ScrapeTarget>();
  for (const t of targets) byUrl.set(`${t.service} ${t.url}`, t);
  const sorted = [...byUrl.values()].sort(
    (a, b) => SERVICE_ORDER[a.service] - SERVICE_ORDER[b.service] || (a.id < b.id ? -1 : a.id > b.id ? 1 : a.url < b.url ? -1 : 1),
  );
  const groups = sorted.map(targetGroup).filter((g): g is FileSdGroup => g !== null);
  return `${JSON.stringify(groups, null, 2)}\n`;
}

/** Live targets with their last sighting; renders them and keeps the file in step. */
export class TargetsFile {
  private readonly seen = new Map<string, { target: ScrapeTarget; at: number }>();
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly ttlMs: number,
  ) {}

  /** Records a sighting of a target (key: service and id; a new URL replaces the old one). */
  saw(target: ScrapeTarget, now = Date.now()): void {
    this.seen.set(`${target.service}/${target.id}`, { target, at: now });
  }

  forget(service: MetricsService, id: string): void {
    this.seen.delete(`${service}/${id}`);
  }

  /** Targets seen within the TTL (older ones are dropped). */
  live(now = Date.now()): ScrapeTarget[] {
    const out: ScrapeTarget[] = [];
    for (const [key, s] of this.seen) {
      if (now - s.at > this.ttlMs) this.seen.delete(key);
      else out.push(s.target);
    }
    return out;
  }

  render(now = Date.now()): string {
    return renderTargets(this.live(now));
  }

  /**
   * Writes the file when its content on disk differs from the live targets
   * (so a file changed or removed by someone else is repaired on the next
   * call); resolves once done. Calls are serialized.
   */
  sync(now = Date.now()): Promise<void> {
    const text = this.render(now);
    this.writing = this.writing
      .catch(() => undefined)
      .then(async () => {
        const current = await fsp.readFile(this.file, 'utf8').catch(() => null);
        if (current !== text) await writeAtomically(this.file, text);
      });
    return this.writing;
  }
}

/** Replaces `file` with `text` in one rename, creating its folder. */
export async function writeAtomically(file: string, text: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await fsp.writeFile(tmp, text);
    await fsp.rename(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** The targets file from the configuration: MAYFLY_PROMETHEUS_SD_FILE, default <data dir>/prometheus/targets.json; null when `off`. */
export function prometheusSdFile(config: Pick<MayflyConfig, 'MAYFLY_PROMETHEUS_SD_FILE' | 'MAYFLY_DATA_DIR'>): string | null {
  const v = config.MAYFLY_PROMETHEUS_SD_FILE;
  if (v !== undefined && ['off', 'none', 'false', '0'].includes(v.toLowerCase())) return null;
  return path.resolve(v ?? path.join(config.MAYFLY_DATA_DIR, 'prometheus', 'targets.json'));
}
