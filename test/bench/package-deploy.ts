/**
 * Deploy time of a package with one small dependency (test/fixtures/packages/with-dep:
 * ms@2.1.3), through a real gateway (nats-server + `mayfly gateway`, no worker needed):
 * the time of POST /system/functions from the client's side, i.e. extraction, npm ci,
 * esbuild and storing the bundle. "cold": the gateway's npm cache folder is emptied
 * before each deploy (every tarball from the registry); "warm": the cache holds ms.
 * Also a TypeScript package without dependencies (no npm at all).
 *   npm run build && node dist/test/bench/package-deploy.js [runs=5]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tar from 'tar';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { freePort, startNatsServer } from '../../infra/nats/nats-server.js';
import { median } from './stats.js';

const FIXTURES = path.join(PROJECT_ROOT, 'test', 'fixtures', 'packages');

async function tarDir(dir: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of tar.create({ gzip: true, cwd: dir, portable: true }, ['.'])) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('base64');
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 5);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfbpkg-'));
  const nats = await startNatsServer({ storeDir: path.join(dir, 'nats'), logFile: path.join(dir, 'nats.log') });
  const port = await freePort();
  const cacheDir = path.join(dir, 'cache');
  const gateway = spawn(process.execPath, [path.join(PROJECT_ROOT, 'dist', 'cli', 'mayfly.js'), 'gateway'], {
    env: { ...process.env, MAYFLY_NATS_URL: nats.url, MAYFLY_PORT: String(port), MAYFLY_AUTH: 'off', MAYFLY_CACHE_DIR: cacheDir, MAYFLY_DATA_DIR: path.join(dir, 'data'), MAYFLY_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    while ((await fetch(`${url}/healthz`).catch(() => null))?.status !== 200) await new Promise((r) => setTimeout(r, 200));
    const withDep = await tarDir(path.join(FIXTURES, 'with-dep'));
    const ts = await tarDir(path.join(FIXTURES, 'typescript'));
    let n = 0;
    const deploy = async (pkg: string, handler: string): Promise<{ ms: number; build: Record<string, number> }> => {
      const t0 = performance.now();
      const r = await fetch(`${url}/system/functions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ service: `b${n++}`, package: pkg, handler }) });
      const body = (await r.json()) as { build: Record<string, number> };
      if (r.status !== 202) throw new Error(`deploy failed: ${r.status} ${JSON.stringify(body)}`);
      return { ms: performance.now() - t0, build: body.build };
    };
    const rows: Array<[string, number[], number[]]> = [];
    const cold: number[] = [];
    const coldNpm: number[] = [];
    for (let i = 0; i < runs; i++) {
      fs.rmSync(path.join(cacheDir, 'npm'), { recursive: true, force: true });
      const d = await deploy(withDep, 'src/index.handler');
      cold.push(d.ms);
      coldNpm.push(d.build.installMs!);
    }
    rows.push(['with ms@2.1.3, npm cache cold', cold, coldNpm]);
    const warm: number[] = [];
    const warmNpm: number[] = [];
    for (let i = 0; i < runs; i++) {
      const d = await deploy(withDep, 'src/index.handler');
      warm.push(d.ms);
      warmNpm.push(d.build.installMs!);
    }
    rows.push(['with ms@2.1.3, npm cache warm', warm, warmNpm]);
    const tsMs: number[] = [];
    for (let i = 0; i < runs; i++) tsMs.push((await deploy(ts, 'src/index.handler')).ms);
    rows.push(['TypeScript, no dependencies', tsMs, tsMs.map(() => 0)]);
    process.stdout.write(`| package (${runs} deploys each) | deploy median ms | min–max | of which npm ci (median) |\n|---|---|---|---|\n`);
    for (const [name, s, npm] of rows) {
      process.stdout.write(`| ${name} | ${median(s).toFixed(0)} | ${Math.min(...s).toFixed(0)}–${Math.max(...s).toFixed(0)} | ${median(npm).toFixed(0)} |\n`);
    }
  } finally {
    const exited = new Promise((r) => gateway.once('exit', r));
    gateway.kill('SIGTERM');
    await exited;
    await nats.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(1);
  },
);
