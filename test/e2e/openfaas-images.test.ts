/**
 * OpenFaaS functions unchanged: container images as VM root filesystems, end to
 * end with every part real (nats-server, scheduler, a worker booting QEMU VMs,
 * the gateway) and a registry served by the test on loopback holding
 * `functions/alpine:latest`, built here from Debian's busybox-static.
 *
 * faas-cli itself is not installable here (no Debian or npm package, Go module
 * downloads blocked): the requests below are the ones faas-cli 0.16/0.17 sends,
 * read from its source (proxy/deploy.go: PUT then POST on 404, the
 * FunctionDeployment body; proxy/invoke.go: /function/<name>[.<namespace>] with
 * its User-Agent and Content-Type; proxy/describe.go: ?namespace=;
 * proxy/secret.go; proxy/namespaces.go).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../helpers/cli.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxImage, startRegistry, type TestRegistry } from '../helpers/oci-registry.js';
import { TestPlatform } from '../helpers/platform.js';

/** An of-watchdog style http-mode image: busybox httpd serving a page and a CGI script. */
function webImage() {
  return busyboxImage({
    Env: ['fprocess=httpd -f -p 127.0.0.1:8082 -h /www', 'mode=http', 'upstream_url=http://127.0.0.1:8082'],
    files: {
      'www/index.html': { data: 'hello from httpd\n' },
      'www/cgi-bin/echo': { data: '#!/bin/sh\necho "Content-Type: text/plain"\necho "X-From: cgi"\necho\necho "method=$REQUEST_METHOD query=$QUERY_STRING"\ncat\n', mode: 0o755 },
    },
  });
}

let p: TestPlatform;
let reg: TestRegistry;
let url: string;
const UA = 'faas-cli/0.17.0 (openfaas; linux; amd64)';

beforeAll(async () => {
  reg = await startRegistry();
  reg.push('functions/alpine', 'latest', await busyboxImage());
  reg.push('functions/web', 'latest', await webImage());
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '1' } });
  url = p.gatewayUrl;
  await p.waitForWorkers(['w1'], 1);
}, 240_000);

afterAll(async () => {
  const pids = p?.qemuPids() ?? [];
  await p?.stop();
  await reg?.close();
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
});

/** `faas-cli deploy`: PUT /system/functions; on 404, POST (proxy/deploy.go). Returns the final response. */
async function faasDeploy(spec: { name: string; image: string; fprocess?: string; env?: Record<string, string>; secrets?: string[]; labels?: Record<string, string>; namespace?: string }) {
  const body = JSON.stringify({
    service: spec.name,
    image: spec.image,
    ...(spec.namespace ? { namespace: spec.namespace } : {}),
    ...(spec.fprocess ? { envProcess: spec.fprocess } : {}),
    ...(spec.env ? { envVars: spec.env } : {}),
    ...(spec.secrets ? { secrets: spec.secrets } : {}),
    labels: spec.labels ?? {},
    annotations: {},
  });
  const send = (method: string) => fetch(`${url}/system/functions`, { method, headers: { 'user-agent': UA, 'content-type': 'application/json' }, body });
  const put = await send('PUT');
  if (put.status !== 404) return put;
  return send('POST');
}

/** `faas-cli invoke NAME [--query k=v]` with stdin as the body (proxy/invoke.go). */
async function faasInvoke(name: string, body: string, query = '') {
  return fetch(`${url}/function/${name}${query}`, { method: 'POST', headers: { 'user-agent': UA, 'content-type': 'text/plain' }, body });
}

describe('OpenFaaS images end to end', () => {
  it('faas-cli deploy --image … --fprocess sha512sum, then invoke: the sha512 computed in a VM', async () => {
    const image = `${reg.host}/functions/alpine:latest`;
    const d = await faasDeploy({ name: 'stronghash', image, fprocess: 'sha512sum' });
    expect(d.status).toBe(202);
    const res = await faasInvoke('stronghash', 'hello mayfly\n');
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const want = createHash('sha512').update('hello mayfly\n').digest('hex');
    expect(text).toBe(`${want}  -\n`);
    expect(res.headers.get('x-call-id')).toMatch(/.+/);
    expect(res.headers.get('x-start-time')).toMatch(/^\d{19}$/);
    // The namespace suffix faas-cli adds with --namespace, and again (a second VM: per-request).
    const again = await faasInvoke('stronghash.openfaas-fn', 'abc');
    expect(await again.text()).toBe(`${createHash('sha512').update('abc').digest('hex')}  -\n`);

    // faas-cli describe: GET /system/function/<name>?namespace=openfaas-fn
    const desc = await fetch(`${url}/system/function/stronghash?namespace=openfaas-fn`, { headers: { 'user-agent': UA } });
    expect(desc.status).toBe(200);
    const status = (await desc.json()) as Record<string, unknown>;
    expect(status).toMatchObject({ name: 'stronghash', image, envProcess: 'sha512sum' });
  }, 180_000);

  it('the mayfly CLI deploys an image too: a stack file with image + fprocess, and --image on the command line', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-img-cli-'));
    try {
      const env = { MAYFLY_GATEWAY: url, MAYFLY_DATA_DIR: path.join(p.dir, 'data'), XDG_CONFIG_HOME: path.join(tmp, 'config') };
      const image = `${reg.host}/functions/alpine:latest`;
      fs.writeFileSync(path.join(tmp, 'stack.yml'), `provider:\n  name: openfaas\nfunctions:\n  hash-cli:\n    lang: dockerfile\n    image: ${image}\n    fprocess: sha512sum\n`);
      const d = await runCli(['deploy', '-f', path.join(tmp, 'stack.yml')], env);
      expect(d.stderr).toBe('');
      expect(d.stdout).toMatch(/^created hash-cli \(version 1, image 127\.0\.0\.1:\d+\/functions\/alpine:latest@sha256:[0-9a-f]{64} pulled in [\d.]+ s, \d+ bytes unpacked\) in [\d.]+ s\n$/);
      const i = await runCli(['invoke', 'hash-cli', '--data', 'abc'], env);
      expect(i.code).toBe(0);
      expect(i.stdout.trim()).toBe(`${createHash('sha512').update('abc').digest('hex')}  -`);
      const w = await runCli(['deploy', '--image', image, '--fprocess', 'wc -c', '--name', 'count-cli'], env);
      expect(w.code).toBe(0);
      const c = await runCli(['invoke', 'count-cli', '--data', 'abcd'], env);
      expect(c.stdout.trim()).toBe('4');
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 240_000);

  it('an env function shows Http_Method, Http_Query, the headers and the deploy env vars; stderr goes to the logs, a failing process is a 500', async () => {
    const d = await faasDeploy({ name: 'env', image: `${reg.host}/functions/alpine:latest`, fprocess: 'env', env: { MY_SETTING: 'on' }, namespace: 'openfaas-fn' });
    expect(d.status).toBe(202);
    const res = await faasInvoke('env', '', '?testing=1');
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const lines = text.split('\n');
    for (const l of ['Http_Method=POST', 'Http_Query=testing=1', 'Http_ContentType=text/plain', `Http_User_Agent=${UA}`, 'MY_SETTING=on', 'Http_Path=/']) expect(lines).toContain(l);
    expect(text).not.toContain('MAYFLY_CHANNEL_FD');

    const bad = await faasDeploy({ name: 'fails', image: `${reg.host}/functions/alpine:latest`, fprocess: 'cat /no/such/file' });
    expect(bad.status).toBe(202);
    const r = await faasInvoke('fails', 'x');
    expect(r.status).toBe(500);
    expect(await r.text()).toMatch(/exit status 1$/);
    // Its stderr is in the call's logs.
    const callId = r.headers.get('x-call-id')!;
    let logs = '';
    for (let i = 0; i < 50 && !logs.includes("can't open"); i++) {
      const rec = await fetch(`${url}/system/invocations/${callId}`);
      if (rec.status === 200) logs = JSON.stringify(((await rec.json()) as { logs?: unknown }).logs ?? []);
      if (!logs.includes("can't open")) await new Promise((res) => setTimeout(res, 200));
    }
    expect(logs).toContain("cat: can't open '/no/such/file'");
  }, 180_000);

  it('faas-cli secret create with a .openfaas-fn name; the function reads it at /var/openfaas/secrets', async () => {
    const s = await fetch(`${url}/system/secrets`, {
      method: 'POST',
      headers: { 'user-agent': UA, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'api-key.openfaas-fn', value: 's3cret-value', namespace: 'openfaas-fn' }),
    });
    expect(s.status).toBe(201);
    const d = await faasDeploy({ name: 'reads-secret', image: `${reg.host}/functions/alpine:latest`, fprocess: 'cat /var/openfaas/secrets/api-key', secrets: ['api-key'] });
    expect(d.status).toBe(202);
    const r = await faasInvoke('reads-secret', '');
    expect(await r.text()).toBe('s3cret-value');
  }, 180_000);

  it('com.openfaas.scale.min: "2" keeps two ready VMs (replicas 2); scale-function to 0 and back', async () => {
    const status = async () => (await (await fetch(`${url}/system/function/scaled`)).json()) as { replicas: number; availableReplicas: number };
    const readyOnHost = async () => {
      const hosts = (await (await fetch(`${url}/system/hosts`)).json()) as Array<{ ready?: Record<string, number> }>;
      return hosts.reduce((n, h) => n + Object.entries(h.ready ?? {}).filter(([k]) => k.startsWith('scaled@')).reduce((a, [, v]) => a + v, 0), 0);
    };
    const until = async (what: string, ok: () => Promise<boolean>, ms = 90_000) => {
      const end = Date.now() + ms;
      while (!(await ok())) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 300));
      }
    };
    const bad = await faasDeploy({ name: 'scaled', image: `${reg.host}/functions/alpine:latest`, fprocess: 'cat', labels: { 'com.openfaas.scale.min': 'two' } });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ code: 'INVALID_LABEL', field: 'labels.com.openfaas.scale.min' });

    const d = await faasDeploy({ name: 'scaled', image: `${reg.host}/functions/alpine:latest`, fprocess: 'cat', labels: { 'com.openfaas.scale.min': '2' } });
    expect(d.status).toBe(202);
    expect((await status()).replicas).toBe(2);
    // No call needed: the worker makes the snapshot and two ready clones of it.
    await until('two ready VMs', async () => (await status()).availableReplicas === 2);
    expect(await readyOnHost()).toBe(2);

    // faas-cli scale: POST /system/scale-function/<name> (proxy/scale.go).
    const scale = (n: number, name = 'scaled') =>
      fetch(`${url}/system/scale-function/${name}`, { method: 'POST', headers: { 'user-agent': UA, 'content-type': 'application/json' }, body: JSON.stringify({ serviceName: name, replicas: n }) });
    expect((await scale(0)).status).toBe(202);
    expect((await status()).replicas).toBe(0);
    await until('no ready VMs', async () => (await status()).availableReplicas === 0 && (await readyOnHost()) === 0);
    // Still callable at 0 (it scales from zero), then back to 1.
    const r = await faasInvoke('scaled', 'still here');
    expect(await r.text()).toBe('still here');
    expect((await scale(1)).status).toBe(202);
    await until('one ready VM', async () => (await status()).availableReplicas === 1);
    const r2 = await faasInvoke('scaled', 'from a ready VM');
    expect(r2.headers.get('x-mayfly-start')).toBe('snapshot');
    expect(await r2.text()).toBe('from a ready VM');

    expect((await scale(33)).status).toBe(400);
    expect((await scale(1, 'ghost')).status).toBe(404);
  }, 240_000);

  it('bad images get their error and nothing is stored; other namespaces and names without one are 404s', async () => {
    const missing = await faasDeploy({ name: 'nope', image: `${reg.host}/functions/missing:latest`, fprocess: 'cat' });
    expect(missing.status).toBe(422);
    expect(await missing.json()).toMatchObject({ code: 'IMAGE_NOT_FOUND', field: 'image' });
    const unreachable = await faasDeploy({ name: 'nope', image: '127.0.0.1:1/functions/alpine:latest', fprocess: 'cat' });
    expect(unreachable.status).toBe(502);
    expect(await unreachable.json()).toMatchObject({ code: 'IMAGE_REGISTRY_UNREACHABLE' });
    expect((await fetch(`${url}/system/function/nope`)).status).toBe(404);

    expect(await (await fetch(`${url}/system/namespaces`)).json()).toEqual(['openfaas-fn']);
    const other = await faasDeploy({ name: 'x', image: `${reg.host}/functions/alpine:latest`, fprocess: 'cat', namespace: 'staging' });
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ code: 'NAMESPACE_NOT_FOUND' });
    const dotOnly = await fetch(`${url}/function/.openfaas-fn`, { method: 'POST', body: 'x' });
    expect(dotOnly.status).toBe(404);
    expect((await fetch(`${url}/function/stronghash.staging`, { method: 'POST', body: 'x' })).status).toBe(404);
  }, 120_000);

  it('an http-mode image on the default tinyx kernel (no IPv4) fails to load with a message saying what to do', async () => {
    const d = await faasDeploy({ name: 'web', image: `${reg.host}/functions/web:latest` });
    expect(d.status).toBe(202);
    const r = await faasInvoke('web', 'x');
    expect(r.status).toBe(500);
    const body = (await r.json()) as { code: string; error: string };
    expect(body.code).toBe('INIT_FAILED');
    expect(body.error).toContain('MAYFLY_GUEST_KERNEL=debian');
  }, 120_000);
});

/**
 * of-watchdog's mode=http: the image runs an HTTP server (busybox httpd with a
 * CGI script) and the agent forwards each call to it on the guest's loopback.
 * TCP needs a guest kernel with IPv4: the tinyx kernel has none, so this
 * platform boots Debian's (MAYFLY_GUEST_KERNEL=debian).
 */
describe('OpenFaaS images in http mode (of-watchdog upstream_url)', () => {
  let hp: TestPlatform;
  beforeAll(async () => {
    hp = await TestPlatform.start({ workers: 1, env: { MAYFLY_POOL_SIZE: '0', MAYFLY_GUEST_KERNEL: 'debian' } });
    await hp.waitForWorkers(['w1'], 0);
  }, 240_000);
  afterAll(async () => {
    const pids = hp?.qemuPids() ?? [];
    await hp?.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });

  it('forwards calls to the server in the VM: path, query, body, status and headers', async () => {
    const d = await fetch(`${hp.gatewayUrl}/system/functions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: 'web', image: `${reg.host}/functions/web:latest` }),
    });
    expect(d.status, await d.clone().text()).toBe(202);
    const r = await fetch(`${hp.gatewayUrl}/function/web/cgi-bin/echo?x=1`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'the body' });
    const text = await r.text();
    expect(r.status, text).toBe(200);
    expect(text).toBe('method=POST query=x=1\nthe body');
    expect(r.headers.get('x-from')).toBe('cgi');
    expect(r.headers.get('x-start-time')).toMatch(/^\d+$/);
    const page = await fetch(`${hp.gatewayUrl}/function/web/index.html`);
    expect(await page.text()).toBe('hello from httpd\n');
    expect((await fetch(`${hp.gatewayUrl}/function/web/missing`)).status).toBe(404);
  }, 180_000);
});
