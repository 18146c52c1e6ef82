/**
 * The Xen suite (`npm run test:xen`): a real Xen 4.17 host nested in QEMU/TCG
 * (infra/xen/build-dom0.sh builds its dom0 once per machine). dom0 runs the
 * driver checks and then the worker with MAYFLY_DRIVER=xen, connected to the
 * nats-server of a platform (scheduler + gateway) on this machine; the
 * invocations below go through that gateway and are answered by Xen guests.
 * Timings are under emulation twice over: generous timeouts, no latency asserts.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { loadConfig, PROJECT_ROOT } from '../../contracts/config.js';
import { ensureImage, type GuestImage } from '../../functions/image/build.js';
import { ensureConfiguredImage } from '../../functions/image/image-options.js';
import { TestPlatform } from '../helpers/platform.js';
import { NestedXenHost, type XenReport } from './nested-host.js';
import { KERNEL_FN } from './kernel-fn.js';


let platform: TestPlatform;
let tinyx: GuestImage;
let host: NestedXenHost;
const t0 = Date.now();
const phase: Record<string, number> = {};
const mark = (name: string) => (phase[name] = Math.round((Date.now() - t0) / 1000));

async function invoke(name: string): Promise<{ status: number; body: Record<string, string> }> {
  const res = await fetch(`${platform.gatewayUrl}/function/${name}`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
  const text = await res.text();
  let body: Record<string, string>;
  try {
    body = JSON.parse(text) as Record<string, string>;
  } catch {
    body = { raw: text };
  }
  return { status: res.status, body };
}

function expectOk(r: XenReport): void {
  expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
}

describe('Mayfly on a nested Xen host', () => {
  beforeAll(async () => {
    const config = loadConfig();
    const image = await ensureImage({ cacheDir: config.MAYFLY_CACHE_DIR, agentDir: path.join(PROJECT_ROOT, 'dist'), kernel: 'debian' });
    // The tinyx kernel for Xen (tinyconfig + microvm + Xen fragments), compiled once per machine.
    tinyx = await ensureConfiguredImage(loadConfig({ ...process.env, MAYFLY_DRIVER: 'xen', MAYFLY_GUEST_KERNEL: 'tinyx' }), {
      onProgress: (p) => {
        if (p.done === undefined && p.step === 'tinyx-kernel') console.log(`[tinyx-xen] ${p.detail ?? ''}`);
      },
    });
    platform = await TestPlatform.start({
      workers: 0,
      env: {
        MAYFLY_HEARTBEAT_MS: '1000',
        MAYFLY_HOST_TTL_MS: '20000',
        MAYFLY_OFFER_TIMEOUT_MS: '20000',
        MAYFLY_PLACEMENT_TIMEOUT_MS: '300000',
        MAYFLY_INVOKE_OVERHEAD_MS: '400000',
      },
    });
    mark('platform');
    host = await NestedXenHost.start({
      natsPort: platform.nats.port,
      imageDir: path.dirname(image.kernelPath),
      extraImages: { tinyx: path.dirname(tinyx.kernelPath) },
      env: { MAYFLY_XEN_TINYX_IMAGE_DIR: '/opt/mayfly/images/tinyx' },
    });
    console.log(`nested Xen host: console in ${host.consoleLog}`);
    const dom0 = await host.waitFor('dom0', 300_000);
    mark('dom0-node-up');
    console.log(`dom0 controller up ${phase['dom0-node-up']} s after start (dom0 uptime ${String(dom0.uptimeS)} s)`);
  });

  afterAll(async () => {
    await host?.stop();
    await platform?.stop();
    console.log(`phases (s since suite start): ${JSON.stringify(phase)}; reports: ${JSON.stringify(host?.reports ?? [])}`);
  });

  it('xl failure handling: a bad guest config is a clear VM_START_FAILED and leaves no domain', async () => {
    const r = await host.waitFor('bad-config', 600_000);
    expectOk(r);
    expect(String(r.message)).toMatch(/could not create Xen domain .*xl create -p/);
  });

  it('a Xen guest boots from create -p, answers over hvc0, pauses and unpauses, and is destroyed', async () => {
    const r = await host.waitFor('lifecycle', 900_000);
    mark('lifecycle');
    expectOk(r);
    expect(r.value).toMatchObject({ hypervisor: 'xen' });
    expectOk(await host.waitFor('destroy', 120_000));
  });

  it('the tinyx kernel built for Xen boots as a PVH guest and runs a function', async () => {
    const r = await host.waitFor('tinyx', 900_000);
    expectOk(r);
    expect(r.value).toMatchObject({ hypervisor: 'xen', release: tinyx.kernelRelease });
    expect(tinyx.kernelKind).toBe('tinyx');
    expect(tinyx.kernelRelease).toMatch(/-tinyx$/);
  });

  it("a crashed worker's domains are swept by the next driver with the same prefix, and only those", async () => {
    expectOk(await host.waitFor('crash-sweep', 900_000));
  });

  it('xl save / xl restore -p of a booted guest gives a clone that answers', async () => {
    const r = await host.waitFor('save-restore', 900_000);
    mark('save-restore');
    expectOk(r);
  });

  it('deploy + sync invoke through the gateway: the answer comes from a Xen guest', async () => {
    await host.waitFor('worker', 300_000);
    await platform.waitForWorkers(['xen1'], 0, 600_000);
    mark('worker-up');
    const dep = await fetch(`${platform.gatewayUrl}/system/functions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: 'kernel', code: KERNEL_FN, isolation: 'per-request' }),
    });
    expect(dep.status, await dep.clone().text()).toBeLessThan(300);
    const first = await invoke('kernel');
    mark('first-invoke');
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.hypervisor).toBe('xen');
    expect(first.body.release).toMatch(/^\d+\.\d+/);
    // per-request isolation: the next call runs in a fresh domain (another boot id).
    const second = await invoke('kernel');
    mark('second-invoke');
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(second.body.hypervisor).toBe('xen');
    expect(second.body.bootId).not.toBe(first.body.bootId);
  });

  it('after the worker stops, no domain is left behind', async () => {
    const nc = await connect({ servers: platform.nats.url });
    nc.publish('mayfly.xentest.stop', 'stop');
    await nc.flush();
    await nc.close();
    const r = await host.waitFor('final', 300_000);
    mark('final');
    expectOk(r);
    expect(r.leftover).toEqual([]);
    // dom0 powers off, Xen powers the machine off: QEMU ends by itself.
    const code = await Promise.race([host.exited, new Promise((res) => setTimeout(() => res('timeout'), 120_000))]);
    expect(code).not.toBe('timeout');
    mark('qemu-exit');
  });
});
