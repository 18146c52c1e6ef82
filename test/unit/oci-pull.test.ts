/**
 * The image puller (functions/oci/) against a real registry served on loopback
 * by the test, with images built here from Debian's busybox-static: the good
 * path (tag, digest, index, token auth, whiteouts) and every bad image getting
 * its own error code.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCpio } from '../../functions/image/cpio.js';
import { ImageError } from '../../functions/oci/errors.js';
import { parseReference } from '../../functions/oci/reference.js';
import { pullImage, type PullOptions } from '../../functions/oci/pull.js';
import { requestEnv } from '../../functions/agent/watchdog.js';
import { busyboxImage, imageFrom, indexOf, layerFromDir, rawLayer, sha256, startRegistry, type BuiltImage, type TestRegistry } from '../helpers/oci-registry.js';

const opts = (o: Partial<PullOptions> = {}): PullOptions => ({
  registryPrefix: '',
  insecureRegistries: [],
  credentials: {},
  maxBytes: 64 * 1024 * 1024,
  maxUnpackedBytes: 64 * 1024 * 1024,
  maxFiles: 10_000,
  timeoutMs: 10_000,
  ...o,
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ImageError);
    return (err as ImageError).code;
  }
  throw new Error('expected the pull to fail');
}

const names = (cpioGz: Buffer) => parseCpio(zlib.gunzipSync(cpioGz)).map((e) => e.name);

describe('OCI image puller', () => {
  let reg: TestRegistry;
  let busybox: BuiltImage;
  beforeAll(async () => {
    reg = await startRegistry();
    busybox = await busyboxImage();
    reg.push('functions/alpine', 'latest', busybox);
  });
  afterAll(async () => {
    await reg?.close();
  });

  it('parses references like docker and faas-cli', () => {
    expect(parseReference('alpine')).toMatchObject({ registry: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' });
    expect(parseReference('functions/alpine:latest')).toMatchObject({ registry: 'registry-1.docker.io', repository: 'functions/alpine' });
    expect(parseReference('127.0.0.1:5000/functions/alpine:1.0')).toMatchObject({ registry: '127.0.0.1:5000', repository: 'functions/alpine', tag: '1.0' });
    expect(parseReference('functions/alpine', 'reg.example.com/mirror')).toMatchObject({ registry: 'reg.example.com', repository: 'mirror/functions/alpine' });
    const d = `sha256:${'a'.repeat(64)}`;
    expect(parseReference(`localhost/x@${d}`)).toMatchObject({ registry: 'localhost', repository: 'x', digest: d });
    expect(() => parseReference('Bad/Name')).toThrow(/not a valid reference/);
  });

  it('pulls an image into a rootfs cpio and reads the watchdog settings', async () => {
    const p = await pullImage(`${reg.host}/functions/alpine:latest`, opts(), 'sha512sum');
    expect(p.digest).toBe(busybox.manifestDigest);
    expect(p.reference).toBe(`${reg.host}/functions/alpine:latest@${busybox.manifestDigest}`);
    expect(p.watchdog).toMatchObject({ mode: 'classic', process: ['sha512sum'], workdir: '/home/app' });
    const n = names(p.rootfs.cpioGz);
    expect(n).toEqual(expect.arrayContaining(['rootfs', 'rootfs/bin/busybox', 'rootfs/bin/sha512sum', 'rootfs/etc/hostname', 'rootfs/dev', 'rootfs/proc', 'rootfs/tmp']));
    const entries = parseCpio(zlib.gunzipSync(p.rootfs.cpioGz));
    const bb = entries.find((e) => e.name === 'rootfs/bin/busybox')!;
    expect(bb.data.equals(fs.readFileSync(fs.realpathSync('/bin/busybox')))).toBe(true);
    expect(entries.find((e) => e.name === 'rootfs/bin/sha512sum')!.data.toString()).toBe('busybox');
    // By digest too, and the same bytes give the same rootfs (content addressed).
    const again = await pullImage(`${reg.host}/functions/alpine@${busybox.manifestDigest}`, opts(), 'sha512sum');
    expect(again.rootfs.sha256).toBe(p.rootfs.sha256);
  });

  it('takes fprocess from the image env when the deploy has none; no process at all is IMAGE_NO_PROCESS', async () => {
    reg.push('fn/with-env', 'v1', await busyboxImage({ Env: ['fprocess=cat', 'mode=http', 'upstream_url=http://127.0.0.1:8000'] }));
    const p = await pullImage(`${reg.host}/fn/with-env:v1`, opts());
    expect(p.watchdog).toMatchObject({ mode: 'http', process: ['cat'], upstreamUrl: 'http://127.0.0.1:8000' });
    expect(await code(pullImage(`${reg.host}/functions/alpine:latest`, opts()))).toBe('IMAGE_NO_PROCESS');
  });

  it('picks linux/amd64 from an index; an index or config for another architecture is IMAGE_WRONG_ARCHITECTURE', async () => {
    const arm = imageFrom([await rawLayer([{ name: 'x', data: 'y' }])], { architecture: 'arm64' });
    reg.push('multi/arch', 'latest', indexOf([{ image: arm, architecture: 'arm64' }, { image: busybox, architecture: 'amd64' }]));
    expect((await pullImage(`${reg.host}/multi/arch`, opts(), 'cat')).digest).toBe(busybox.manifestDigest);
    reg.push('arm/only', 'latest', indexOf([{ image: arm, architecture: 'arm64' }]));
    expect(await code(pullImage(`${reg.host}/arm/only`, opts(), 'cat'))).toBe('IMAGE_WRONG_ARCHITECTURE');
    reg.push('arm/single', 'latest', arm);
    expect(await code(pullImage(`${reg.host}/arm/single`, opts(), 'cat'))).toBe('IMAGE_WRONG_ARCHITECTURE');
  });

  it('bad images each get their error', async () => {
    expect(await code(pullImage(`${reg.host}/functions/missing:latest`, opts(), 'cat'))).toBe('IMAGE_NOT_FOUND');
    expect(await code(pullImage(`${reg.host}/functions/alpine:latest`, opts({ maxBytes: 1000 }), 'cat'))).toBe('IMAGE_TOO_LARGE');
    expect(await code(pullImage(`${reg.host}/functions/alpine:latest`, opts({ maxUnpackedBytes: 1000 }), 'cat'))).toBe('IMAGE_TOO_LARGE');
    // A layer whose bytes do not match the manifest's digest.
    const img = await busyboxImage({ Env: ['X=tampered'] });
    reg.push('bad/digest', 'latest', img);
    const layer = JSON.parse(img.manifest.toString()).layers[0] as { digest: string; size: number };
    const evil = Buffer.from(img.blobs.get(layer.digest)!);
    evil[evil.length - 20] = evil[evil.length - 20]! ^ 0xff;
    reg.tamper(layer.digest, evil);
    const err = await pullImage(`${reg.host}/bad/digest`, opts(), 'cat').catch((e: unknown) => e as ImageError);
    expect(err).toMatchObject({ code: 'IMAGE_DIGEST_MISMATCH', status: 502 });
    expect((err as Error).message).toContain(layer.digest);
    // A layer that writes outside the image.
    reg.push('bad/traversal', 'latest', imageFrom([await rawLayer([{ name: '../../etc/evil', data: 'x' }])], {}));
    const trav = await pullImage(`${reg.host}/bad/traversal`, opts(), 'cat').catch((e: unknown) => e as ImageError);
    expect(trav).toMatchObject({ code: 'IMAGE_LAYER_UNSAFE', status: 422 });
    expect((trav as Error).message).toContain('../../etc/evil');
    // A file written through a symlink of an earlier layer.
    reg.push('bad/through-link', 'latest', imageFrom([await rawLayer([{ name: 'etc', type: '2', link: '/' }]), await rawLayer([{ name: 'etc/x', data: 'x' }])], {}));
    expect(await code(pullImage(`${reg.host}/bad/through-link`, opts(), 'cat'))).toBe('IMAGE_LAYER_UNSAFE');
    // Not an image reference; a registry nobody listens on.
    expect(await code(pullImage('UPPER/case', opts(), 'cat'))).toBe('IMAGE_REFERENCE_INVALID');
    const closed = await startRegistry();
    const host = closed.host;
    await closed.close();
    expect(await code(pullImage(`${host}/functions/alpine`, opts(), 'cat'))).toBe('IMAGE_REGISTRY_UNREACHABLE');
  });

  it('applies layers in order with whiteouts and opaque directories', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-oci-wh-'));
    try {
      fs.mkdirSync(path.join(dir, 'a'));
      fs.writeFileSync(path.join(dir, 'a', 'keep'), '1');
      fs.writeFileSync(path.join(dir, 'a', 'gone'), '1');
      fs.mkdirSync(path.join(dir, 'b'));
      fs.writeFileSync(path.join(dir, 'b', 'old'), '1');
      fs.writeFileSync(path.join(dir, 'c'), 'first');
      const l1 = await layerFromDir(dir, ['a', 'b', 'c']);
      const l2 = await rawLayer([
        { name: 'a/.wh.gone' },
        { name: 'b/', type: '5' },
        { name: 'b/.wh..wh..opq' },
        { name: 'b/new', data: '2' },
        { name: 'c', data: 'second' },
        { name: 'd', type: '0', data: 'hard' },
        { name: 'e', type: '1' as '0', link: 'd' },
      ]);
      reg.push('layers/wh', 'latest', imageFrom([l1, l2], { Entrypoint: ['/bin/cat'] }));
      const p = await pullImage(`${reg.host}/layers/wh`, opts());
      expect(p.watchdog.process).toEqual(['/bin/cat']);
      const entries = parseCpio(zlib.gunzipSync(p.rootfs.cpioGz));
      const n = entries.map((e) => e.name);
      expect(n).toContain('rootfs/a/keep');
      expect(n).not.toContain('rootfs/a/gone');
      expect(n).not.toContain('rootfs/b/old');
      expect(n).toContain('rootfs/b/new');
      expect(entries.find((e) => e.name === 'rootfs/c')!.data.toString()).toBe('second');
      expect(entries.find((e) => e.name === 'rootfs/e')!.data.toString()).toBe('hard');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gets a bearer token when the registry asks for one (the Docker Hub dance)', async () => {
    const secured = await startRegistry({ token: 'tok-123' });
    try {
      secured.push('functions/alpine', 'latest', busybox);
      const p = await pullImage(`${secured.host}/functions/alpine:latest`, opts(), 'cat');
      expect(p.digest).toBe(busybox.manifestDigest);
      expect(secured.requests).toContain('GET /token');
    } finally {
      await secured.close();
    }
  });

  it("builds the classic watchdog's request environment", () => {
    const env = requestEnv({
      method: 'POST',
      path: '/x',
      query: { testing: '1' },
      headers: { 'content-type': 'text/plain', 'x-call-id': 'c1' },
      body: '',
      isBase64Encoded: false,
    });
    expect(env).toMatchObject({ Http_Method: 'POST', Http_Path: '/x', Http_Query: 'testing=1', Http_ContentType: 'text/plain', Http_Content_Type: 'text/plain', Http_X_Call_Id: 'c1' });
    void sha256;
    void execFileSync;
  });
});
