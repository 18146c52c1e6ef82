/**
 * One iteration of the nested Xen host in one command, for debugging (not part
 * of any suite): `npm run build && node dist/test/xen/debug-run.js [KEY=VALUE ...]`.
 * KEY=VALUE pairs go to dom0's run.env (e.g. MAYFLY_XEN_SKIP_DRIVER_CHECKS=1,
 * MAYFLY_XEN_STRESS_S=30, MAYFLY_XEN_STRESS_ONLY=1, MAYFLY_POOL_SIZE=0).
 * MAYFLY_XEN_QEMU_CPU / MAYFLY_XEN_EXTRA_ARGS (in this process's environment)
 * pick the emulated CPU and extra Xen options. Unless MAYFLY_XEN_STRESS_ONLY=1,
 * it waits for the worker, deploys the kernel function, invokes it twice, lets
 * the worker run DEBUG_OBSERVE_S more seconds, stops it and prints a summary.
 * MAYFLY_XEN_BOOTLOOP=N (+ MAYFLY_XEN_BOOTLOOP_CONCURRENCY, _BURN, _PIN, _KARGS, _VCPUS: see
 * dom0-controller.ts bootloop()) boots N guests in a loop instead, without worker or gateway,
 * and prints a BOOTLOOP-SUMMARY line with the Xen "Triple fault" count from the serial log.
 * It always stops the QEMU and the platform it started (by PID).
 */
import fs from 'node:fs';
import path from 'node:path';
import { connect } from '@nats-io/transport-node';
import { loadConfig, PROJECT_ROOT } from '../../contracts/config.js';
import { ensureImage } from '../../functions/image/build.js';
import { TestPlatform } from '../helpers/platform.js';
import { NestedXenHost } from './nested-host.js';
import { KERNEL_FN } from './kernel-fn.js';


const t0 = Date.now();
const since = () => `${Math.round((Date.now() - t0) / 1000)}s`;
const log = (m: string) => console.log(`[debug-run ${since()}] ${m}`);

async function main(): Promise<void> {
  const env = Object.fromEntries(process.argv.slice(2).map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
  const stressOnly = env.MAYFLY_XEN_STRESS_ONLY === '1';
  const config = loadConfig();
  const image = await ensureImage({ cacheDir: config.MAYFLY_CACHE_DIR, agentDir: path.join(PROJECT_ROOT, 'dist'), kernel: 'debian' });
  const platform = await TestPlatform.start({
    workers: 0,
    env: { MAYFLY_HEARTBEAT_MS: '1000', MAYFLY_HOST_TTL_MS: '20000', MAYFLY_OFFER_TIMEOUT_MS: '20000', MAYFLY_PLACEMENT_TIMEOUT_MS: '300000', MAYFLY_INVOKE_OVERHEAD_MS: '400000' },
  });
  let host: NestedXenHost | null = null;
  const stop = async () => {
    await host?.stop();
    await platform.stop();
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    host = await NestedXenHost.start({ natsPort: platform.nats.port, imageDir: path.dirname(image.kernelPath), env });
    log(`console: ${host.consoleLog} (cpu ${process.env.MAYFLY_XEN_QEMU_CPU ?? 'default'}, xen extra "${process.env.MAYFLY_XEN_EXTRA_ARGS ?? ''}", env ${JSON.stringify(env)})`);
    await host.waitFor('dom0', 300_000);
    log('dom0 controller up');
    if (Number(env.MAYFLY_XEN_BOOTLOOP ?? 0) > 0) {
      // The boot loop (dom0-controller.ts bootloop()): no worker, no gateway. Allow ~30 s per boot.
      const r = await host.waitFor('bootloop', 120_000 + Number(env.MAYFLY_XEN_BOOTLOOP) * 30_000);
      await Promise.race([host.exited, new Promise((res) => setTimeout(res, 60_000))]);
      const serial = fs.readFileSync(host.consoleLog, 'utf8');
      const triple = serial.split('\n').filter((l) => /\(XEN\) d\d+v\d+ Triple fault/.test(l) && !l.includes('XENTEST')).length;
      log(`bootloop: ${JSON.stringify(r)}`);
      log(`BOOTLOOP-SUMMARY boots=${String(r.boots)} ok=${String(r.okCount)} failed=${String(r.failed)} tripleFaults(serial)=${triple} accel=${process.env.MAYFLY_XEN_QEMU_ACCEL ?? 'tcg'} cpu=${process.env.MAYFLY_XEN_QEMU_CPU ?? 'default'} xenExtra="${process.env.MAYFLY_XEN_EXTRA_ARGS ?? ''}" env=${JSON.stringify(env)}`);
      return;
    }
    if (env.MAYFLY_XEN_STRESS_S) {
      for (const c of env.MAYFLY_XEN_STRESS_ALONE === '0' ? ['stress-with-guest'] : ['stress-dom0-only', 'stress-with-guest']) log(`${c}: ${JSON.stringify(await host.waitFor(c, 600_000))}`);
    }
    if (!stressOnly) {
      await host.waitFor('worker', 900_000);
      log('worker started');
      const ended = host.exited.then(() => {
        throw new Error('QEMU ended');
      });
      await Promise.race([platform.waitForWorkers(['xen1'], 0, 600_000), ended]);
      log('worker heartbeats');
      if (process.env.DEBUG_INVOKE !== '0') {
        const dep = await fetch(`${platform.gatewayUrl}/system/functions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ service: 'kernel', code: KERNEL_FN, isolation: 'per-request' }),
        });
        log(`deploy ${dep.status}`);
        for (let i = 0; i < 2; i++) {
          const res = await Promise.race([fetch(`${platform.gatewayUrl}/function/kernel`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } }), ended]);
          log(`invoke ${i + 1}: ${res.status} ${await res.text()}`);
        }
      }
      const observe = Number(process.env.DEBUG_OBSERVE_S ?? 30);
      await Promise.race([new Promise((r) => setTimeout(r, observe * 1000)), ended]);
      const nc = await connect({ servers: platform.nats.url });
      nc.publish('mayfly.xentest.stop', 'stop');
      await nc.flush();
      await nc.close();
      log(`final: ${JSON.stringify(await host.waitFor('final', 300_000))}`);
    }
    await Promise.race([host.exited, new Promise((r) => setTimeout(r, 120_000))]);
  } catch (err) {
    log(`error: ${(err as Error).message}`);
  } finally {
    const text = host ? fs.readFileSync(host.consoleLog, 'utf8') : '';
    const bad = text.split('\n').filter((l) => /corrupted|Segmentation|Illegal instruction|Aborted|FATAL|Trace\/breakpoint|core dumped|CONTROLLER-EXIT/.test(l));
    log(`console markers:\n  ${bad.join('\n  ') || '(none)'}`);
    await stop();
    log('stopped');
  }
}

void main().then(() => process.exit(0));
