/**
 * Debian's Prometheus server for a local platform (`MAYFLY_PROMETHEUS=1 npm
 * start`) and for the observability test: the shipped config
 * (infra/prometheus/prometheus.yml) rendered with the targets file and scrape
 * interval in use, loopback only, its TSDB in a folder the caller owns,
 * stopped by PID.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../contracts/config.js';
import { startDaemon } from './daemon.js';

export const SHIPPED_PROMETHEUS_CONFIG = path.join(PROJECT_ROOT, 'infra', 'prometheus', 'prometheus.yml');

export interface RenderOptions {
  /** Absolute path of the file_sd targets file. */
  sdFile: string;
  /** Prometheus duration, e.g. "1s"; the scrape timeout follows it (it may not exceed it). */
  scrapeInterval?: string;
  /** file_sd re-read fallback, e.g. "1s". */
  refreshInterval?: string;
}

function replaceOnce(text: string, re: RegExp, to: (m: RegExpExecArray) => string, what: string): string {
  const m = re.exec(text);
  if (!m) throw new Error(`prometheus config: no ${what} to replace`);
  return text.slice(0, m.index) + to(m) + text.slice(m.index + m[0].length);
}

/** Halves a Prometheus duration like "5s" or "500ms" (for the scrape timeout); null when it is not one. */
function timeoutFor(interval: string): string | null {
  const m = /^(\d+)(ms|s|m)$/.exec(interval);
  if (!m) return null;
  const ms = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000);
  return `${Math.max(100, Math.floor(ms * 0.8))}ms`;
}

/**
 * The shipped prometheus.yml with the targets file (and intervals) replaced.
 * Plain text edits of known lines (no YAML library): throws when a line is
 * missing, so the shipped file and this function stay in step (unit-tested).
 */
export function renderPrometheusConfig(template: string, opts: RenderOptions): string {
  let out = replaceOnce(
    template,
    /^(\s*- files:\s*\n\s*- ).*$/m,
    (m) => `${m[1]}${JSON.stringify(opts.sdFile)}`,
    'file_sd_configs files entry',
  );
  if (opts.scrapeInterval) {
    const timeout = timeoutFor(opts.scrapeInterval);
    if (!timeout) throw new Error(`prometheus config: bad scrape interval ${opts.scrapeInterval}`);
    out = replaceOnce(out, /^(\s*scrape_interval:\s*).*$/m, (m) => `${m[1]}${opts.scrapeInterval}`, 'scrape_interval');
    out = replaceOnce(out, /^(\s*scrape_timeout:\s*).*$/m, (m) => `${m[1]}${timeout}`, 'scrape_timeout');
    out = replaceOnce(out, /^(\s*evaluation_interval:\s*).*$/m, (m) => `${m[1]}${opts.scrapeInterval}`, 'evaluation_interval');
  }
  if (opts.refreshInterval) {
    out = replaceOnce(out, /^(\s*refresh_interval:\s*).*$/m, (m) => `${m[1]}${opts.refreshInterval}`, 'refresh_interval');
  }
  return out;
}

export interface PrometheusHandle {
  url: string;
  port: number;
  pid: number;
  configFile: string;
  stop(): Promise<void>;
}

/**
 * Renders the config into `dir`/prometheus.yml and runs `prometheus` on
 * 127.0.0.1:`port` with its TSDB in `dir`/tsdb; resolves once /-/ready answers.
 */
export async function startPrometheus(opts: RenderOptions & { dir: string; port: number; logFile?: string; template?: string }): Promise<PrometheusHandle> {
  fs.mkdirSync(opts.dir, { recursive: true });
  const configFile = path.join(opts.dir, 'prometheus.yml');
  fs.writeFileSync(configFile, renderPrometheusConfig(opts.template ?? fs.readFileSync(SHIPPED_PROMETHEUS_CONFIG, 'utf8'), opts));
  const url = `http://127.0.0.1:${opts.port}`;
  const daemon = await startDaemon({
    name: 'prometheus',
    command: 'prometheus',
    args: [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(opts.dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${opts.port}`,
      '--web.enable-lifecycle',
    ],
    ...(opts.logFile ? { logFile: opts.logFile } : {}),
    ready: () => fetch(`${url}/-/ready`).then((r) => r.ok),
    readyTimeoutMs: 30_000,
    pollMs: 100,
    stopGraceMs: 10_000,
  });
  return { url, port: opts.port, pid: daemon.pid, configFile, stop: () => daemon.stop() };
}
