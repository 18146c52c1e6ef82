/**
 * `npm run bench:image-function`: an OpenFaaS image function (busybox
 * `sha512sum` under the classic watchdog contract: one process per call in the
 * image's root filesystem, chrooted in the VM) against a code function doing
 * the same work (a Node handler returning the sha512 of the body), measured in
 * the same run on the same platform. The image comes from a registry served by
 * this process on loopback (built from Debian's busybox-static).
 *
 *   per-request, sequential   a fresh VM per call (a ready clone of the
 *                             function's snapshot), waiting until the worker is
 *                             idle again plus BENCH_PAUSE_MS between calls
 *   warm (per-function)       one VM serves successive calls, back-to-back
 *
 * Also printed: the deploy time of the image (pull + rootfs build + store).
 * Baseline row: the code function, per-request. BENCH_CALLS (30), BENCH_PAUSE_MS (200).
 */
import { createHash } from 'node:crypto';
import { busyboxImage, startRegistry } from '../helpers/oci-registry.js';
import { callOk, deploy, envInt, managed, progress, runBench, sleep, startPlatform, verdict, waitPoolFull, type CallResult } from './common.js';
import { percentile, row, table } from './stats.js';

const CALLS = envInt('BENCH_CALLS', 30);
const PAUSE_MS = envInt('BENCH_PAUSE_MS', 200);
const POOL = 1;

const SHA_HANDLER = `import { createHash } from 'node:crypto';
export async function handler(event) {
  return { statusCode: 200, headers: { 'content-type': 'text/plain' }, body: createHash('sha512').update(event.body).digest('hex') + '  -\\n' };
}`;

async function deployImage(gateway: string, service: string, image: string, isolation: string): Promise<{ url: string; ms: number }> {
  const t = performance.now();
  const res = await fetch(`${gateway}/system/functions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ service, image, envProcess: 'sha512sum', isolation }),
  });
  const ms = performance.now() - t;
  if (res.status !== 202) throw new Error(`deploy ${service}: ${res.status} ${await res.text()}`);
  return { url: `${gateway}/function/${service}`, ms };
}

/** Calls until one comes from the function's snapshot (it is made in the background after the first start). */
async function untilSnapshot(p: Parameters<typeof waitPoolFull>[0], url: string): Promise<void> {
  for (let i = 0; ; i++) {
    await waitPoolFull(p, 'w1', POOL);
    if ((await callOk(url, 'warmup')).start === 'snapshot') return;
    if (i > 60) throw new Error(`${url} was never served from its snapshot`);
  }
}

function check(r: CallResult, body: string): void {
  const want = `${createHash('sha512').update(body).digest('hex')}  -\n`;
  if (r.body !== want) throw new Error(`wrong answer: ${r.body.slice(0, 200)}`);
}

await runBench('image-function', async () => {
  const reg = await managed('registry', startRegistry(), (r) => r.close());
  reg.push('functions/alpine', 'latest', await busyboxImage());
  const image = `${reg.host}/functions/alpine:latest`;
  const p = await startPlatform({ workers: 1, env: { MAYFLY_POOL_SIZE: String(POOL) } });
  progress('platform up; waiting for the worker pool');
  await p.waitForWorkers(['w1'], POOL);

  const deployMs: number[] = [];
  const img = await deployImage(p.gatewayUrl, 'img-pr', image, 'per-request');
  deployMs.push(img.ms);
  const imgWarm = await deployImage(p.gatewayUrl, 'img-warm', image, 'per-function');
  deployMs.push(imgWarm.ms);
  const code = await deploy(p, 'code-pr', SHA_HANDLER, 'per-request');
  const codeWarm = await deploy(p, 'code-warm', SHA_HANDLER, 'per-function');
  await untilSnapshot(p, img.url);
  await untilSnapshot(p, code);
  for (let i = 0; i < 3; i++) {
    await callOk(imgWarm.url, 'warmup');
    await callOk(codeWarm, 'warmup');
  }

  const imgSeq = row('image function, per-request, sequential');
  const codeSeq = row('code function, per-request, sequential (baseline)');
  const starts: string[] = [];
  for (let i = 0; i < CALLS; i++) {
    const body = `call ${i}`;
    await waitPoolFull(p, 'w1', POOL);
    await sleep(PAUSE_MS);
    const a = await callOk(img.url, body);
    check(a, body);
    imgSeq.samples.push(a.ms);
    starts.push(a.start ?? '?');
    await waitPoolFull(p, 'w1', POOL);
    await sleep(PAUSE_MS);
    const b = await callOk(code, body);
    check(b, body);
    codeSeq.samples.push(b.ms);
    if ((i + 1) % 10 === 0) progress(`per-request ${i + 1}/${CALLS}`);
  }

  const imgW = row('image function, warm, back-to-back');
  const codeW = row('code function, warm, back-to-back');
  for (let i = 0; i < CALLS; i++) {
    const body = `warm ${i}`;
    const a = await callOk(imgWarm.url, body);
    check(a, body);
    imgW.samples.push(a.ms);
    const b = await callOk(codeWarm, body);
    check(b, body);
    codeW.samples.push(b.ms);
  }

  process.stdout.write(`\n${table([imgSeq, imgW, codeW], codeSeq)}\n`);
  process.stdout.write(`image deploys (pull from loopback, rootfs, store): ${deployMs.map((m) => `${m.toFixed(0)} ms`).join(', ')}\n`);
  process.stdout.write(`image function VM starts (per-request): ${[...new Set(starts)].map((s) => `${s} ${starts.filter((x) => x === s).length}`).join(', ')}\n`);
  const ratio = percentile(imgSeq.samples, 50) / percentile(codeSeq.samples, 50);
  const ratioWarm = percentile(imgW.samples, 50) / percentile(codeW.samples, 50);
  verdict(
    'image-function',
    `image p50 ${percentile(imgSeq.samples, 50).toFixed(1)} ms per-request = ${ratio.toFixed(2)}x the code function; warm ${percentile(imgW.samples, 50).toFixed(1)} ms = ${ratioWarm.toFixed(2)}x`,
  );
});
