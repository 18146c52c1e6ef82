/**
 * `npm run bench`: VM start and control costs on this machine, with the host's
 * own `node -e 0` process spawn measured in the same run as the baseline.
 *   cold boot          QEMU process start + guest boot until the agent's `ready`
 *   pause + unpause    QMP `stop` then `cont` on a running guest
 *   unpause + call     `cont`, one invocation, `stop` again (a paused warm VM serving a request)
 *   warm call          one invocation on a running VM
 * BENCH_BOOTS (default 10) and BENCH_ROUNDS (default 50) set the sample counts.
 */
import { spawnSync } from 'node:child_process';
import { loadConfig } from '../../contracts/config.js';
import { VmHost } from '../../worker/vm-host.js';
import { table, type Row } from './stats.js';

const boots = Number(process.env.BENCH_BOOTS ?? 10);
const rounds = Number(process.env.BENCH_ROUNDS ?? 50);
const ev = { method: 'POST', path: '/', query: {}, headers: {}, body: '1', isBase64Encoded: false };
const fn = {
  functionName: 'bench',
  code: 'export const handler = async (e) => Number(e.body) + 1;',
  handler: 'handler',
  env: {},
  memoryLimitInMB: 128,
};

function time(f: () => void): number {
  const t = performance.now();
  f();
  return performance.now() - t;
}

async function main(): Promise<void> {
  const host = await VmHost.open(loadConfig(), (p) => {
    if (p.done === undefined) process.stderr.write(`image: ${p.step}\n`);
  });
  const stopping = () => void host.close().finally(() => process.exit(130));
  process.once('SIGINT', stopping);
  try {
    const baseline: Row = { name: 'host: spawn `node -e 0` (baseline)', samples: [] };
    const cold: Row = { name: `VM cold boot to ready (${host.driver.accel})`, samples: [] };
    const create: Row = { name: '  of which: QEMU start, paused (-S)', samples: [] };
    for (let i = 0; i < boots; i++) {
      baseline.samples.push(time(() => spawnSync(process.execPath, ['-e', '0'])));
      const t = performance.now();
      const s = await host.prepare(128);
      create.samples.push(performance.now() - t);
      await s.boot();
      cold.samples.push(performance.now() - t);
      await s.destroy('bench');
      process.stderr.write(`boot ${i + 1}/${boots}: ${cold.samples.at(-1)!.toFixed(0)} ms\n`);
    }

    const s = await host.prepare(128);
    const pauseUnpause: Row = { name: 'pause + unpause (QMP stop, cont)', samples: [] };
    const unpauseCall: Row = { name: 'unpause + call + pause (warm VM)', samples: [] };
    const warm: Row = { name: 'call on a running VM', samples: [] };
    try {
      await s.boot();
      await s.init(fn);
      for (let i = 0; i < rounds; i++) {
        let t = performance.now();
        await host.driver.pause(s.vm);
        await host.driver.start(s.vm);
        pauseUnpause.samples.push(performance.now() - t);

        t = performance.now();
        const r = await s.invoke({ callId: `w${i}`, event: ev, timeoutMs: 10_000 });
        warm.samples.push(performance.now() - t);
        if (!r.ok || r.value !== 2) throw new Error(`unexpected result ${JSON.stringify(r)}`);

        await host.driver.pause(s.vm);
        t = performance.now();
        await host.driver.start(s.vm);
        await s.invoke({ callId: `u${i}`, event: ev, timeoutMs: 10_000 });
        await host.driver.pause(s.vm);
        unpauseCall.samples.push(performance.now() - t);
        await host.driver.start(s.vm);
      }
    } finally {
      await s.destroy('bench');
    }
    process.stdout.write(`\n${table([cold, create, pauseUnpause, unpauseCall, warm], baseline)}\n`);
  } finally {
    await host.close();
  }
}

await main();
