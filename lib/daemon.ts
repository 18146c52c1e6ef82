/**
 * One helper process the platform or a test runs for itself (nats-server,
 * prometheus): spawned with its output appended to a log file, ready when a
 * probe says so (it fails fast when the process exits first), and stopped by
 * its own PID: SIGTERM, then SIGKILL after a grace period. Never by name.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface DaemonOptions {
  /** For error messages, e.g. "nats-server". */
  name: string;
  command: string;
  args: string[];
  /** Appended to; stdout and stderr are dropped without one. */
  logFile?: string;
  /** Resolves true once the daemon serves (polled). */
  ready: () => Promise<boolean>;
  readyTimeoutMs: number;
  pollMs?: number;
  /** Time between SIGTERM and SIGKILL in stop(). */
  stopGraceMs: number;
}

export interface Daemon {
  pid: number;
  stop(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const out = opts.logFile ? fs.openSync(opts.logFile, 'a') : 'ignore';
  const proc: ChildProcess = spawn(opts.command, opts.args, { stdio: ['ignore', out, out] });
  if (typeof out === 'number') fs.closeSync(out);
  let exited = false;
  let spawnError: Error | undefined;
  const exitedP = new Promise<void>((resolve) => {
    proc.once('exit', () => {
      exited = true;
      resolve();
    });
    proc.once('error', (err) => {
      // ENOENT etc.: there is no process to wait for.
      spawnError = err;
      exited = true;
      resolve();
    });
  });
  // No PID: the spawn itself failed (e.g. ENOENT), reported by an 'error' event on a later tick.
  if (proc.pid === undefined) await exitedP;
  const daemon: Daemon = {
    pid: proc.pid ?? -1,
    async stop() {
      if (exited) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), opts.stopGraceMs);
      await exitedP;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + opts.readyTimeoutMs;
  for (;;) {
    if (exited) {
      throw new Error(
        spawnError
          ? `${opts.name} could not be started: ${spawnError.message}`
          : `${opts.name} exited at start (see ${opts.logFile ?? 'its output'})`,
      );
    }
    if (await opts.ready().catch(() => false)) return daemon;
    if (Date.now() > deadline) {
      await daemon.stop();
      throw new Error(`${opts.name} was not ready within ${Math.round(opts.readyTimeoutMs / 1000)} s`);
    }
    await sleep(opts.pollMs ?? 50);
  }
}
