/** lib/daemon.ts with real processes: ready probe, early exit, missing binary, stop by PID with SIGKILL fallback. */
import { describe, expect, it } from 'vitest';
import { startDaemon } from '../../lib/daemon.js';
import { isAlive } from '../helpers/processes.js';

const base = { readyTimeoutMs: 3000, pollMs: 20, stopGraceMs: 300 };

describe('startDaemon', () => {
  it('waits for the probe, and stop() ends the process by its PID (SIGKILL when SIGTERM is ignored)', async () => {
    let polls = 0;
    const d = await startDaemon({ ...base, name: 'stubborn', command: 'sh', args: ['-c', "trap '' TERM; while :; do sleep 0.05; done"], ready: async () => ++polls >= 3 });
    expect(polls).toBe(3);
    expect(isAlive(d.pid)).toBe(true);
    await d.stop();
    expect(isAlive(d.pid)).toBe(false);
    await d.stop(); // idempotent
  });

  it('fails fast, naming the daemon, when it exits before it is ready', async () => {
    const t0 = Date.now();
    await expect(startDaemon({ ...base, name: 'quitter', command: 'sh', args: ['-c', 'exit 3'], ready: async () => false })).rejects.toThrow(/quitter exited at start/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('says when the binary does not exist', async () => {
    await expect(startDaemon({ ...base, name: 'ghost', command: '/nonexistent/ghost-daemon', args: [], ready: async () => true })).rejects.toThrow(/ghost could not be started: .*ENOENT/);
  });

  it('stops a daemon that never becomes ready, and says so', async () => {
    let pid = 0;
    await expect(
      startDaemon({ ...base, readyTimeoutMs: 300, name: 'slow', command: 'sleep', args: ['30'], ready: async () => false }).then((d) => (pid = d.pid)),
    ).rejects.toThrow(/slow was not ready within 0 s/);
    expect(pid).toBe(0);
  });
});
