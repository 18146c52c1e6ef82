/**
 * CPU fairness between functions on one worker (real platform, real VMs): a
 * function spinning on every vCPU it can get (several concurrent calls, each in
 * its own VM, each burning its vCPU until its deadline) must not slow a warm
 * bystander function down by more than 1.5x its p50 alone. Run twice: with the
 * per-VM CFS quota on (the default) and off (MAYFLY_VM_CPU_QUOTA_PCT=0, weights
 * only), to show that the limit is what keeps the bystander fast.
 */
import os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { percentile } from '../bench/stats.js';
import { TestPlatform } from '../helpers/platform.js';

const isRoot = process.getuid?.() === 0;
/** Spinning calls at once: one more than the host has cores. */
const SPINNERS = os.availableParallelism() + 1;
const SAMPLES = 15;

const platforms: TestPlatform[] = [];
afterAll(async () => {
  await Promise.all(platforms.map((p) => p.stop()));
});

async function deploy(p: TestPlatform, service: string, code: string, extra: Record<string, unknown> = {}): Promise<void> {
  const res = await fetch(`${p.gatewayUrl}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, code, ...extra }),
  });
  expect(res.status).toBe(202);
}

async function bystanderP50(p: TestPlatform): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const t0 = performance.now();
    const res = await fetch(`${p.gatewayUrl}/function/bystander`, { method: 'POST', body: String(i) });
    expect(await res.json()).toBe(`ok ${i}`);
    ms.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 100));
  }
  return percentile(ms, 50);
}

/** The bystander's warm p50 alone, then while SPINNERS calls of `spin` burn their vCPUs. */
async function scenario(quotaPct: string): Promise<{ alone: number; spinning: number; ratio: number }> {
  const p = await TestPlatform.start({
    workers: 1,
    env: { MAYFLY_POOL_SIZE: '2', MAYFLY_MEMORY_BUDGET_MB: '8192', MAYFLY_VM_CPU_QUOTA_PCT: quotaPct, MAYFLY_JAILER: 'on' },
  });
  platforms.push(p);
  await p.waitForWorkers(['w1'], 2);
  await deploy(p, 'bystander', `export const handler = async (e) => 'ok ' + e.body;`, { isolation: 'per-function' });
  await deploy(p, 'spin', `export const handler = async () => { for (;;) {} };`, { timeout: 20 });
  await bystanderP50(p); // starts its VM and warms it
  const alone = await bystanderP50(p);
  const spins = Array.from({ length: SPINNERS }, () => fetch(`${p.gatewayUrl}/function/spin`, { method: 'POST', body: 'go' }));
  // Until every spinner's VM is up and burning (each needs a fresh VM).
  await p.waitFor(() => p.qemuPids('w1').length >= SPINNERS + 1, 60_000, 'spinning VMs');
  await new Promise((r) => setTimeout(r, 1500));
  const spinning = await bystanderP50(p);
  const answers = await Promise.all(spins);
  // Still spinning when the bystander was done: every spin call ended at its deadline.
  expect(answers.map((r) => r.status)).toEqual(Array(SPINNERS).fill(504));
  platforms.splice(platforms.indexOf(p), 1);
  await p.stop();
  return { alone, spinning, ratio: spinning / alone };
}

describe.runIf(isRoot)('CPU fairness (real platform, jailer on)', () => {
  let on: Awaited<ReturnType<typeof scenario>>;

  it(`with the per-VM CPU quota, ${SPINNERS} spinning VMs leave a warm bystander within 1.5x of its p50 alone`, async () => {
    on = await scenario('50');
    console.log(`cpu quota on: bystander p50 alone ${on.alone.toFixed(1)} ms, while spinning ${on.spinning.toFixed(1)} ms (${on.ratio.toFixed(2)}x)`);
    expect(on.ratio).toBeLessThan(1.5);
  });

  it('without the quota (weights only) the same spin slows the bystander down more', async () => {
    const off = await scenario('0');
    console.log(`cpu quota off: bystander p50 alone ${off.alone.toFixed(1)} ms, while spinning ${off.spinning.toFixed(1)} ms (${off.ratio.toFixed(2)}x)`);
    expect(off.ratio).toBeGreaterThan(on.ratio);
  });
});
