/**
 * Runtime images beyond node, built from recipes (functions/image/runtime-deps.ts):
 * Debian's python3 (ELF closure + the files a traced start-up opened) and a
 * plain static binary (compiled here with gcc -static). Each image boots on
 * every kernel the project ships (Debian's cloud kernel and the minimized
 * tinyx kernel) and a function in the guest runs both runtimes for real.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/config.js';
import { VmHost } from '../../worker/vm-host.js';
import { childQemuPids } from '../helpers/processes.js';
import { event, fn, TEST_KERNELS } from '../helpers/vm-host.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mfrt-'));
const hello = path.join(work, 'mayfly-hello');

beforeAll(() => {
  const src = path.join(work, 'hello.c');
  fs.writeFileSync(src, '#include <stdio.h>\nint main(int c, char **v) { printf("static hello %d %s\\n", c, c > 1 ? v[1] : "-"); return 0; }\n');
  execFileSync('gcc', ['-static', '-O2', '-s', '-o', hello, src]);
  expect(execFileSync('file', ['-L', hello]).toString()).toMatch(/statically linked/);
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
  expect(childQemuPids()).toEqual([]);
});

const CODE = `
import { execFileSync } from 'node:child_process';
import os from 'node:os';
export async function handler(event) {
  const py = execFileSync('python3', ['-c', 'import json, sys, hashlib; d = json.loads(sys.stdin.read()); print(json.dumps({"sum": sum(d), "sha": hashlib.sha256(b"mayfly").hexdigest()[:12], "version": sys.version_info[0]}))'], { input: event.body });
  const bin = execFileSync('/usr/bin/mayfly-hello', ['guest']).toString().trim();
  return { python: JSON.parse(py.toString()), bin, release: os.release() };
}`;

describe.each(TEST_KERNELS)('runtime images on the %s kernel', (kernel) => {
  let host: VmHost;

  beforeAll(async () => {
    const config = loadConfig({
      ...process.env,
      MAYFLY_GUEST_KERNEL: kernel,
      MAYFLY_IMAGE_RUNTIMES: `python3,binary:${hello}`,
      MAYFLY_RUN_DIR: path.join(os.tmpdir(), `mfrt-${randomBytes(3).toString('hex')}`),
    });
    host = await VmHost.open(config);
  });

  afterAll(async () => {
    await host?.close();
  });

  it('ships python3 and the static binary, and a function runs both inside the guest', async () => {
    expect(host.image.kernelKind).toBe(kernel);
    expect(host.image.runtimes).toEqual(['python3', `binary:${hello}`]);
    const files = new Set(host.image.files);
    expect(files.has('/usr/bin/python3')).toBe(true);
    expect(files.has('/usr/bin/mayfly-hello')).toBe(true);
    // python's stdlib came from the traced start-up, not from shipping the whole tree.
    expect([...files].some((f) => /^\/usr\/lib\/python3\.\d+\/json\/__init__\.py$/.test(f))).toBe(true);
    expect([...files].some((f) => /^\/usr\/lib\/python3\.\d+\/tkinter\//.test(f))).toBe(false);

    const { outcome } = await host.runOnce(fn(CODE, 'runtimes'), { callId: `rt-${kernel}`, event: event('[1, 2, 39]'), timeoutMs: 60_000 });
    expect(outcome.ok, JSON.stringify(outcome)).toBe(true);
    if (!outcome.ok) return;
    expect(outcome.value).toEqual({
      python: { sum: 42, sha: createHash('sha256').update('mayfly').digest('hex').slice(0, 12), version: 3 },
      bin: 'static hello 2 guest',
      release: host.image.kernelRelease,
    });
  });
});
