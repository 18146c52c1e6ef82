/**
 * A client of the registry HTTP API v2 (the OCI distribution spec): manifests
 * and blobs, anonymous or with credentials, and the token dance registries
 * like Docker Hub ask for (401 + `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
 * → GET realm → `token`). Every request is bounded in time; bodies in size.
 */
import { createHash } from 'node:crypto';
import { ImageError } from './errors.js';
import type { ImageReference } from './reference.js';

export interface RegistryOptions {
  /** Plain HTTP instead of HTTPS. */
  insecure: boolean;
  timeoutMs: number;
  /** user:password for this registry (basic auth, or to obtain a bearer token). */
  credentials?: { username: string; password: string };
}

export const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

/** Largest manifest or config blob accepted (they are JSON). */
const MAX_JSON_BYTES = 4 * 1024 * 1024;

function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^(\w+)\s*(.*)$/s.exec(header.trim());
  const params: Record<string, string> = {};
  if (!m) return { scheme: '', params };
  for (const p of m[2]!.matchAll(/(\w+)="([^"]*)"/g)) params[p[1]!.toLowerCase()] = p[2]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

export class RegistryClient {
  private authorization: string | undefined;
  private readonly base: string;

  constructor(
    private readonly ref: ImageReference,
    private readonly opts: RegistryOptions,
  ) {
    this.base = `${opts.insecure ? 'http' : 'https'}://${ref.registry}/v2/${ref.repository}`;
    if (opts.credentials) {
      this.authorization = `Basic ${Buffer.from(`${opts.credentials.username}:${opts.credentials.password}`).toString('base64')}`;
    }
  }

  private where(): string {
    return `${this.ref.registry}/${this.ref.repository}`;
  }

  private async request(url: string, accept: string[]): Promise<Response> {
    const go = async (): Promise<Response> => {
      try {
        return await fetch(url, {
          headers: { accept: accept.join(', '), ...(this.authorization ? { authorization: this.authorization } : {}) },
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        });
      } catch (err) {
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        const why = (err as Error).name === 'TimeoutError' ? `no answer within ${this.opts.timeoutMs} ms` : (cause?.code ?? cause?.message ?? (err as Error).message);
        throw new ImageError(
          'IMAGE_REGISTRY_UNREACHABLE',
          `registry ${this.ref.registry} is unreachable (${why}); check the image name, the registry address${this.opts.insecure ? '' : ' and that it serves HTTPS (plain HTTP registries go in MAYFLY_INSECURE_REGISTRIES)'}`,
        );
      }
    };
    let res = await go();
    if (res.status === 401 && !this.authorization?.startsWith('Bearer ')) {
      const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
      await res.body?.cancel();
      if (challenge.scheme === 'bearer' && challenge.params.realm) {
        this.authorization = `Bearer ${await this.token(challenge.params)}`;
        res = await go();
      } else if (challenge.scheme === 'basic' && !this.authorization) {
        throw new ImageError('IMAGE_UNAUTHORIZED', `registry ${this.ref.registry} asks for credentials for ${this.where()}; set MAYFLY_REGISTRY_AUTH="${this.ref.registry}=user:password"`);
      }
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw new ImageError(
        'IMAGE_UNAUTHORIZED',
        `registry ${this.ref.registry} refused access to ${this.where()} (${res.status}); a private image needs MAYFLY_REGISTRY_AUTH="${this.ref.registry}=user:password"`,
      );
    }
    return res;
  }

  private async token(p: Record<string, string>): Promise<string> {
    const url = new URL(p.realm!);
    if (p.service) url.searchParams.set('service', p.service);
    url.searchParams.set('scope', p.scope ?? `repository:${this.ref.repository}:pull`);
    let res: Response;
    try {
      res = await fetch(url, {
        headers: this.opts.credentials
          ? { authorization: `Basic ${Buffer.from(`${this.opts.credentials.username}:${this.opts.credentials.password}`).toString('base64')}` }
          : {},
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
    } catch (err) {
      throw new ImageError('IMAGE_REGISTRY_UNREACHABLE', `the token service ${url.origin} of registry ${this.ref.registry} is unreachable: ${(err as Error).message}`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new ImageError('IMAGE_UNAUTHORIZED', `the token service of registry ${this.ref.registry} refused a pull token for ${this.where()} (${res.status}); check MAYFLY_REGISTRY_AUTH`);
    }
    const body = (await res.json().catch(() => ({}))) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new ImageError('IMAGE_REGISTRY_ERROR', `the token service of registry ${this.ref.registry} answered without a token`);
    return token;
  }

  /** A manifest (or index) by tag or digest: its bytes, media type and digest (checked when the reference was a digest). */
  async manifest(reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const res = await this.request(`${this.base}/manifests/${reference}`, MANIFEST_TYPES);
    if (res.status === 404) {
      await res.body?.cancel();
      throw new ImageError('IMAGE_NOT_FOUND', `image ${this.where()}:${reference} not found in registry ${this.ref.registry} (404); check the name and tag, and that it was pushed`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new ImageError('IMAGE_REGISTRY_ERROR', `registry ${this.ref.registry} answered ${res.status} for the manifest of ${this.where()}:${reference}`);
    }
    const bytes = await readBounded(res, MAX_JSON_BYTES, () => new ImageError('IMAGE_MANIFEST_INVALID', `the manifest of ${this.where()}:${reference} is larger than ${MAX_JSON_BYTES} bytes`));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new ImageError('IMAGE_DIGEST_MISMATCH', `registry ${this.ref.registry} served a manifest for ${reference} whose sha256 is ${digest}`);
    }
    let mediaType = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
    try {
      const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
      if (typeof parsed.mediaType === 'string') mediaType = parsed.mediaType;
    } catch {
      throw new ImageError('IMAGE_MANIFEST_INVALID', `the manifest of ${this.where()}:${reference} is not JSON`);
    }
    return { bytes, mediaType, digest };
  }

  /**
   * A blob, read whole and checked against its digest and declared size:
   * `maxBytes` bounds what is read (a registry that sends more is cut off).
   */
  async blob(digest: string, declaredSize: number, maxBytes: number, what: string): Promise<Buffer> {
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) {
      throw new ImageError('IMAGE_MANIFEST_INVALID', `${what} of ${this.where()} has an unsupported digest "${digest}" (sha256 only)`);
    }
    const res = await this.request(`${this.base}/blobs/${digest}`, ['*/*']);
    if (res.status === 404) {
      await res.body?.cancel();
      throw new ImageError('IMAGE_NOT_FOUND', `${what} ${digest} of ${this.where()} is missing from registry ${this.ref.registry} (404)`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new ImageError('IMAGE_REGISTRY_ERROR', `registry ${this.ref.registry} answered ${res.status} for ${what} ${digest}`);
    }
    const limit = Math.min(maxBytes, declaredSize);
    const bytes = await readBounded(res, limit, () =>
      new ImageError('IMAGE_DIGEST_MISMATCH', `registry ${this.ref.registry} sent more than the ${declaredSize} bytes the manifest declares for ${what} ${digest}`),
    );
    const got = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (bytes.length !== declaredSize || got !== digest) {
      throw new ImageError('IMAGE_DIGEST_MISMATCH', `${what} of ${this.where()} does not match its digest: expected ${digest} (${declaredSize} bytes), got ${got} (${bytes.length} bytes); nothing was used`);
    }
    return bytes;
  }
}

/** Reads a response body, failing (and cancelling the rest) beyond `max` bytes. */
async function readBounded(res: Response, max: number, tooBig: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  if (!res.body) return Buffer.alloc(0);
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > max) {
      await reader.cancel().catch(() => {});
      throw tooBig();
    }
    chunks.push(Buffer.from(value));
  }
  return Buffer.concat(chunks);
}
