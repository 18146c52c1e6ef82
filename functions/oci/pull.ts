/**
 * Pulls an image and makes what a VM boots it from: resolve the reference
 * (an index picks linux/amd64: the guest is x86-64), read the config, check the
 * sizes the manifest declares before downloading anything, download each layer
 * and check its digest, apply the layers, and write the gzip'd cpio of the root
 * filesystem (rootfs.ts). Also reads what the watchdog needs from the image's
 * config: its env (fprocess, mode, upstream_url, content_type), entrypoint and
 * working directory. Nothing is returned (so nothing is stored) unless every
 * step succeeded.
 */
import { ImageError } from './errors.js';
import { formatReference, isLoopbackRegistry, parseReference, type ImageReference } from './reference.js';
import { RegistryClient } from './registry.js';
import { RootfsBuilder, type Rootfs } from './rootfs.js';
import type { WatchdogSpec } from '../../contracts/watchdog.js';

export interface PullOptions {
  registryPrefix: string;
  /** host[:port] reached over plain HTTP (loopback always is). */
  insecureRegistries: string[];
  /** host → credentials. */
  credentials: Record<string, { username: string; password: string }>;
  maxBytes: number;
  maxUnpackedBytes: number;
  maxFiles: number;
  timeoutMs: number;
}

export interface PulledImage {
  /** registry/repository:tag@sha256:… of the manifest used. */
  reference: string;
  digest: string;
  rootfs: Rootfs;
  /** Compressed bytes of all layers. */
  layerBytes: number;
  /** The watchdog settings that come from the image (the deploy's envProcess overrides `process`). */
  watchdog: Omit<WatchdogSpec, 'v'>;
  pullMs: number;
}

/** The guest architecture (QEMU x86-64 and Xen x86 hosts). */
export const GUEST_PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const MANIFEST_TYPES = new Set(['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json']);
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

function descriptor(v: unknown, what: string): Descriptor {
  const d = v as Partial<Descriptor> | null;
  if (!d || typeof d.digest !== 'string' || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new ImageError('IMAGE_MANIFEST_INVALID', `the image manifest has an invalid ${what} descriptor (needs a digest and a size)`);
  }
  return d as Descriptor;
}

/** Parses MAYFLY_REGISTRY_AUTH: `host=user:password,host2=user:password`. */
export function parseRegistryAuth(v: string): Record<string, { username: string; password: string }> {
  const out: Record<string, { username: string; password: string }> = {};
  for (const item of v.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = item.indexOf('=');
    const colon = item.indexOf(':', eq + 1);
    if (eq <= 0 || colon < 0) throw new Error(`MAYFLY_REGISTRY_AUTH: "${item.split(':')[0]}…" must be host=user:password`);
    out[item.slice(0, eq)] = { username: item.slice(eq + 1, colon), password: item.slice(colon + 1) };
  }
  return out;
}

function envMap(env: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(env)) return out;
  for (const e of env) {
    if (typeof e !== 'string') continue;
    const i = e.indexOf('=');
    if (i > 0) out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

export async function pullImage(image: string, opts: PullOptions, envProcess?: string): Promise<PulledImage> {
  const t0 = performance.now();
  const ref: ImageReference = parseReference(image, opts.registryPrefix);
  const client = new RegistryClient(ref, {
    insecure: isLoopbackRegistry(ref.registry) || opts.insecureRegistries.includes(ref.registry),
    timeoutMs: opts.timeoutMs,
    ...(opts.credentials[ref.registry] ? { credentials: opts.credentials[ref.registry]! } : {}),
  });
  let m = await client.manifest(ref.digest ?? ref.tag!);
  if (INDEX_TYPES.has(m.mediaType)) {
    const index = JSON.parse(m.bytes.toString('utf8')) as { manifests?: unknown[] };
    const entries = (index.manifests ?? []).map((d) => descriptor(d, 'index entry'));
    const pick = entries.find((d) => d.platform?.os === GUEST_PLATFORM.os && d.platform?.architecture === GUEST_PLATFORM.architecture);
    if (!pick) {
      const have = entries.map((d) => `${d.platform?.os ?? '?'}/${d.platform?.architecture ?? '?'}`).join(', ') || 'none';
      throw new ImageError('IMAGE_WRONG_ARCHITECTURE', `image ${ref.original} has no ${GUEST_PLATFORM.os}/${GUEST_PLATFORM.architecture} variant (it has: ${have}); Mayfly's guests are x86-64 Linux`);
    }
    m = await client.manifest(pick.digest);
  }
  if (!MANIFEST_TYPES.has(m.mediaType)) {
    throw new ImageError(
      'IMAGE_MANIFEST_INVALID',
      `image ${ref.original} has a manifest of type "${m.mediaType || 'unknown'}"; Mayfly reads OCI and Docker v2 schema 2 manifests (push it with a current docker, buildah or crane)`,
    );
  }
  const manifest = JSON.parse(m.bytes.toString('utf8')) as { config?: unknown; layers?: unknown[] };
  const configDesc = descriptor(manifest.config, 'config');
  const layers = (manifest.layers ?? []).map((l, i) => descriptor(l, `layer ${i + 1}`));
  if (layers.length === 0) throw new ImageError('IMAGE_MANIFEST_INVALID', `image ${ref.original} has no layers`);
  const layerBytes = layers.reduce((n, l) => n + l.size, 0);
  if (layerBytes > opts.maxBytes) {
    throw new ImageError('IMAGE_TOO_LARGE', `image ${ref.original} has ${layerBytes} bytes of layers, above the limit of ${opts.maxBytes} (MAYFLY_IMAGE_MAX_BYTES)`);
  }
  for (const [i, l] of layers.entries()) {
    if (l.mediaType && !LAYER_TYPES.has(l.mediaType)) {
      throw new ImageError('IMAGE_LAYER_UNSUPPORTED', `layer ${i + 1} of ${ref.original} is "${l.mediaType}"; Mayfly unpacks tar and tar+gzip layers (rebuild without zstd compression)`);
    }
  }
  const config = JSON.parse((await client.blob(configDesc.digest, configDesc.size, 4 * 1024 * 1024, 'the image config')).toString('utf8')) as {
    os?: string;
    architecture?: string;
    config?: { Env?: unknown; Entrypoint?: unknown; Cmd?: unknown; WorkingDir?: unknown };
  };
  if (config.os !== GUEST_PLATFORM.os || config.architecture !== GUEST_PLATFORM.architecture) {
    throw new ImageError(
      'IMAGE_WRONG_ARCHITECTURE',
      `image ${ref.original} is for ${config.os ?? '?'}/${config.architecture ?? '?'}; Mayfly's guests are ${GUEST_PLATFORM.os}/${GUEST_PLATFORM.architecture} (build or pull the amd64 variant)`,
    );
  }
  const builder = new RootfsBuilder({ maxUnpackedBytes: opts.maxUnpackedBytes, maxFiles: opts.maxFiles });
  for (const [i, l] of layers.entries()) {
    const bytes = await client.blob(l.digest, l.size, opts.maxBytes, `layer ${i + 1}`);
    await builder.apply(bytes, `${i + 1} (${l.digest.slice(0, 19)})`);
  }
  const rootfs = await builder.finish();

  const c = config.config ?? {};
  const env = envMap(c.Env);
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  // The process: the deploy's envProcess, else the image's fprocess env (the watchdog's), else entrypoint + cmd.
  const fprocess = envProcess?.trim() || env.fprocess?.trim() || '';
  const argv = fprocess ? fprocess.split(' ').filter(Boolean) : [...strings(c.Entrypoint), ...strings(c.Cmd)];
  if (argv.length === 0) {
    throw new ImageError('IMAGE_NO_PROCESS', `image ${ref.original} names no process to run: deploy with envProcess (faas-cli --fprocess), or give the image an fprocess env or an entrypoint`);
  }
  const mode = env.mode === 'http' ? 'http' : 'classic';
  return {
    reference: formatReference(ref, m.digest),
    digest: m.digest,
    rootfs,
    layerBytes,
    watchdog: {
      mode,
      process: argv,
      env,
      workdir: typeof c.WorkingDir === 'string' && c.WorkingDir !== '' ? c.WorkingDir : '/',
      ...(mode === 'http' ? { upstreamUrl: env.upstream_url || 'http://127.0.0.1:8082' } : {}),
      ...(env.content_type ? { contentType: env.content_type } : {}),
    },
    pullMs: performance.now() - t0,
  };
}
