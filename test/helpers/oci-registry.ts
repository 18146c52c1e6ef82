/**
 * A small OCI registry (distribution API v2, pull side) served by the test on
 * loopback, and OCI images built in the test from Debian's busybox-static: no
 * image is pulled from the internet. Optional bearer-token auth (the Docker Hub
 * dance: 401 + WWW-Authenticate, GET /token, retry), and knobs to serve bad
 * bytes for the error tests.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { create as tarCreate } from 'tar';

const gzip = promisify(zlib.gzip);
export const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface BuiltImage {
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
  blobs: Map<string, Buffer>;
}

/** A tar.gz layer from a folder (entries relative to it, in the order given). */
export async function layerFromDir(dir: string, entries: string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stream = tarCreate({ cwd: dir, portable: true, gzip: false, noDirRecurse: false }, entries);
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
  return gzip(Buffer.concat(chunks));
}

/** A raw tar.gz with hand-made headers (for paths tar would refuse to create, like "../x"). */
export async function rawLayer(files: Array<{ name: string; data?: string; type?: '0' | '2' | '5'; link?: string }>): Promise<Buffer> {
  const blocks: Buffer[] = [];
  for (const f of files) {
    const h = Buffer.alloc(512);
    const data = Buffer.from(f.data ?? '');
    h.write(f.name, 0, 100, 'utf8');
    h.write(f.type === '5' ? '0000755\0' : '0000755\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write(f.type ?? '0', 156);
    if (f.link) h.write(f.link, 157, 100, 'utf8');
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzip(Buffer.concat(blocks));
}

/** An image from layers and an image config. */
export function imageFrom(layers: Buffer[], config: { architecture?: string; os?: string; Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; WorkingDir?: string }): BuiltImage {
  const blobs = new Map<string, Buffer>();
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: config.architecture ?? 'amd64',
      os: config.os ?? 'linux',
      config: { Env: config.Env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...(config.Entrypoint ? { Entrypoint: config.Entrypoint } : {}), ...(config.Cmd ? { Cmd: config.Cmd } : {}), ...(config.WorkingDir ? { WorkingDir: config.WorkingDir } : {}) },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(zlib.gunzipSync(l))) },
    }),
  );
  blobs.set(sha256(cfg), cfg);
  for (const l of layers) blobs.set(sha256(l), l);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(cfg), size: cfg.length },
      layers: layers.map((l) => ({ mediaType: OCI_LAYER_GZIP, digest: sha256(l), size: l.length })),
    }),
  );
  return { manifest, manifestDigest: sha256(manifest), mediaType: OCI_MANIFEST, blobs };
}

/** An image index listing images by platform. */
export function indexOf(entries: Array<{ image: BuiltImage; architecture: string }>): BuiltImage {
  const blobs = new Map<string, Buffer>();
  for (const e of entries) for (const [k, v] of e.image.blobs) blobs.set(k, v);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: entries.map((e) => ({ mediaType: OCI_MANIFEST, digest: e.image.manifestDigest, size: e.image.manifest.length, platform: { os: 'linux', architecture: e.architecture } })),
    }),
  );
  for (const e of entries) blobs.set(e.image.manifestDigest, e.image.manifest);
  return { manifest, manifestDigest: sha256(manifest), mediaType: OCI_INDEX, blobs };
}

const APPLETS = ['sh', 'sha512sum', 'env', 'cat', 'echo', 'httpd', 'wc', 'false', 'sleep', 'printf'];

/**
 * `functions/alpine:latest` as the OpenFaaS docs use it, built here: Debian's
 * static busybox at /bin/busybox, applet symlinks in /bin, an /etc, and the
 * classic watchdog's `fprocess` env left to the deploy (faas-cli --fprocess).
 */
export async function busyboxImage(extra: { Env?: string[]; files?: Record<string, { data: string; mode?: number }> } = {}): Promise<BuiltImage> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-oci-'));
  try {
    fs.mkdirSync(path.join(dir, 'bin'));
    fs.mkdirSync(path.join(dir, 'etc'));
    fs.mkdirSync(path.join(dir, 'home', 'app'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'etc', 'hostname'), 'fn\n');
    fs.copyFileSync(fs.realpathSync('/bin/busybox'), path.join(dir, 'bin', 'busybox'));
    fs.chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
    for (const a of APPLETS) fs.symlinkSync('busybox', path.join(dir, 'bin', a));
    const top = new Set(['bin', 'etc', 'home']);
    for (const [name, f] of Object.entries(extra.files ?? {})) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), f.data, { mode: f.mode ?? 0o644 });
      top.add(name.split('/')[0]!);
    }
    const layer = await layerFromDir(dir, [...top]);
    return imageFrom([layer], { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...(extra.Env ?? [])], WorkingDir: '/home/app' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export interface TestRegistry {
  url: string;
  /** host:port, for image references. */
  host: string;
  push(repo: string, tag: string, image: BuiltImage): void;
  /** Serve these bytes instead of the blob's own (digest mismatch tests). */
  tamper(digest: string, bytes: Buffer): void;
  requests: string[];
  close(): Promise<void>;
}

export async function startRegistry(opts: { token?: string } = {}): Promise<TestRegistry> {
  const manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  const tags = new Map<string, string>();
  const blobs = new Map<string, Buffer>();
  const tampered = new Map<string, Buffer>();
  const requests: string[] = [];
  let base = '';
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', base);
    requests.push(`${req.method} ${url.pathname}`);
    if (url.pathname === '/token') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ token: opts.token }));
      return;
    }
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
      res.statusCode = 401;
      res.setHeader('www-authenticate', `Bearer realm="${base}/token",service="test-registry",scope="repository:x:pull"`);
      res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    if (url.pathname === '/v2/' || url.pathname === '/v2') {
      res.end('{}');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!m) {
      res.statusCode = 404;
      res.end();
      return;
    }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (kind === 'manifests') {
      const digest = ref.startsWith('sha256:') ? ref : tags.get(`${repo}:${ref}`);
      const man = digest ? manifests.get(`${repo}@${digest}`) : undefined;
      if (!man) {
        res.statusCode = 404;
        res.setHeader('content-type', 'application/json');
        res.end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
        return;
      }
      res.setHeader('content-type', man.mediaType);
      res.setHeader('docker-content-digest', digest!);
      res.end(req.method === 'HEAD' ? undefined : man.bytes);
      return;
    }
    const blob = tampered.get(ref) ?? blobs.get(ref);
    if (!blob) {
      res.statusCode = 404;
      res.end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
      return;
    }
    res.setHeader('content-type', 'application/octet-stream');
    res.end(blob);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
  return {
    url: base,
    host: `127.0.0.1:${port}`,
    requests,
    push(repo, tag, image) {
      for (const [k, v] of image.blobs) {
        blobs.set(k, v);
        // Manifests listed by an index are fetched by digest as manifests.
        try {
          const j = JSON.parse(v.toString('utf8')) as { mediaType?: string; schemaVersion?: number };
          if (j.schemaVersion === 2 && j.mediaType) manifests.set(`${repo}@${k}`, { bytes: v, mediaType: j.mediaType });
        } catch {
          /* a layer */
        }
      }
      manifests.set(`${repo}@${image.manifestDigest}`, { bytes: image.manifest, mediaType: image.mediaType });
      tags.set(`${repo}:${tag}`, image.manifestDigest);
    },
    tamper(digest, bytes) {
      tampered.set(digest, bytes);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
