/**
 * The README's Quick start, run as a new user would, from a fresh clone of this
 * checkout's committed HEAD (as CI does): `npm ci` (which builds, through
 * `prepare`), then the first code block (`npm start`) in the background and
 * the second block's commands verbatim in bash. Only the ports are moved by
 * environment variables (MAYFLY_PORT, MAYFLY_NATS_URL), because other tests may
 * use the defaults on this machine; the CLI finds the gateway from MAYFLY_PORT
 * and the credentials in the platform's data dir, with no password handling.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { freePort, startNatsServer, type NatsServerHandle } from '../../infra/nats/nats-server.js';

let dir: string;
let nats: NatsServerHandle | null = null;
let platform: ChildProcess | null = null;
let platformLog = '';
let runDir: string;

/** The fenced ```sh blocks of the README's "## Quick start" section. */
function quickStartBlocks(readme: string): string[] {
  const start = readme.indexOf('\n## Quick start');
  const end = readme.indexOf('\n## ', start + 5);
  const section = readme.slice(start, end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

function qemuPids(): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') && cmd.includes(runDir)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfqs-'));
  runDir = path.join(os.tmpdir(), `mfqs-run-${process.pid}`);
});

afterAll(async () => {
  if (platform && platform.exitCode === null && platform.signalCode === null) {
    const exited = new Promise((r) => platform!.once('exit', r));
    process.kill(-platform.pid!, 'SIGINT'); // the process group this test started (npm → mayfly up → services)
    const t = setTimeout(() => process.kill(-platform!.pid!, 'SIGKILL'), 60_000);
    await exited;
    clearTimeout(t);
  }
  await nats?.stop();
  expect(qemuPids()).toEqual([]);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(runDir, { recursive: true, force: true });
}, 120_000);

it('runs the README Quick start verbatim from a fresh clone', async () => {
  const clone = path.join(dir, 'mayfly');
  execFileSync('git', ['clone', '--quiet', PROJECT_ROOT, clone]);
  execFileSync('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: clone, stdio: 'ignore', timeout: 300_000 });
  // `npm ci` ran `prepare` (the build): the bin is executable and npx finds it.
  expect(fs.statSync(path.join(clone, 'dist', 'cli', 'mayfly.js')).mode & 0o111).not.toBe(0);
  expect(execFileSync('npx', ['mayfly', '--help'], { cwd: clone }).toString()).toMatch(/^usage: mayfly/);

  const [startBlock, userBlock] = quickStartBlocks(fs.readFileSync(path.join(clone, 'README.md'), 'utf8'));
  expect(startBlock).toBeDefined();
  expect(userBlock).toBeDefined();
  const startCmd = startBlock!.split('\n').find((l) => l.trim() && !l.trim().startsWith('#'))!;
  expect(startCmd.trim()).toBe('npm start');

  nats = await startNatsServer({ storeDir: path.join(dir, 'nats'), logFile: path.join(dir, 'nats.log') });
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, MAYFLY_PORT: String(port), MAYFLY_NATS_URL: nats.url, MAYFLY_RUN_DIR: runDir, MAYFLY_PROMETHEUS_SD_FILE: "off" };
  delete env.MAYFLY_GATEWAY;
  delete env.MAYFLY_DATA_DIR;
  platform = spawn('bash', ['-c', startCmd], { cwd: clone, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  platform.stdout!.on('data', (c: Buffer) => (platformLog += c.toString()));
  platform.stderr!.on('data', (c: Buffer) => (platformLog += c.toString()));
  const deadline = Date.now() + 240_000;
  while ((await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null))?.status !== 200) {
    if (platform.exitCode !== null) throw new Error(`npm start exited:\n${platformLog.slice(-3000)}`);
    if (Date.now() > deadline) throw new Error(`the platform did not come up:\n${platformLog.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }

  // The user's terminal: the second block, verbatim, in the clone (fails on the first failing command).
  const out = execFileSync('bash', ['-e', '-c', userBlock!], { cwd: clone, env: { ...env, XDG_CONFIG_HOME: path.join(dir, 'config') }, timeout: 240_000 }).toString();
  expect(out).toMatch(/^created hello \(version 1\) in [\d.]+ s$/m);
  expect(out).toMatch(/^\{"hello":"mayfly","from":"hello"\}$/m);
  expect(out).toMatch(/ called with mayfly$/m);
}, 600_000);
