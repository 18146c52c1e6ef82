/**
 * Image references as Docker and faas-cli write them:
 *   alpine                       → registry-1.docker.io/library/alpine:latest
 *   functions/alpine:latest      → registry-1.docker.io/functions/alpine:latest
 *   127.0.0.1:5000/fn/x@sha256:… → that registry, that digest
 * With a registry prefix (MAYFLY_REGISTRY_PREFIX), references without a host
 * are looked up there instead of Docker Hub.
 */
import { ImageError } from './errors.js';

export interface ImageReference {
  /** host[:port] as written (docker.io mapped to registry-1.docker.io). */
  registry: string;
  repository: string;
  /** Tag, or absent when a digest is given. */
  tag?: string;
  digest?: string;
  /** What the user wrote. */
  original: string;
}

const DOCKER_HUB = 'registry-1.docker.io';
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

function invalid(ref: string, why: string): never {
  throw new ImageError('IMAGE_REFERENCE_INVALID', `image "${ref}" is not a valid reference: ${why} (e.g. "127.0.0.1:5000/functions/alpine:latest")`);
}

/** The first component is a registry host when it has a dot or a port, or is localhost (Docker's rule). */
function isHost(part: string): boolean {
  return part.includes('.') || part.includes(':') || part === 'localhost' || part.startsWith('[');
}

export function parseReference(input: string, prefix = ''): ImageReference {
  const ref = input.trim();
  if (ref === '' || ref.length > 512) invalid(input, 'empty or longer than 512 characters');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) invalid(input, 'the digest must be sha256:<64 hex digits>');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) invalid(input, `bad tag "${tag}"`);
  }
  let parts = rest.split('/');
  let registry: string;
  if (parts.length > 1 && isHost(parts[0]!)) {
    registry = parts[0]!;
    parts = parts.slice(1);
  } else if (prefix.trim() !== '') {
    const p = prefix.trim().replace(/\/+$/, '').split('/');
    registry = p[0]!;
    parts = [...p.slice(1), ...parts];
  } else {
    registry = DOCKER_HUB;
    if (parts.length === 1) parts = ['library', ...parts];
  }
  if (registry === 'docker.io' || registry === 'index.docker.io') registry = DOCKER_HUB;
  if (parts.length === 0 || parts.some((c) => !COMPONENT.test(c))) invalid(input, 'the repository must be lowercase path components of a-z, 0-9 and . _ -');
  if (!digest && !tag) tag = 'latest';
  return { registry, repository: parts.join('/'), ...(tag ? { tag } : {}), ...(digest ? { digest } : {}), original: ref };
}

/** The canonical form stored with a function: registry/repository:tag@digest. */
export function formatReference(r: ImageReference, digest?: string): string {
  const d = digest ?? r.digest;
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${d ? `@${d}` : ''}`;
}

/** Loopback registries are reached over plain HTTP, like Docker's default insecure range 127.0.0.0/8. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : registry.split(':')[0]!;
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
