/** What the route handlers share: the backend, the metrics and the limits. */
import type { HostView } from '../lib/host-directory.js';
import type { TokenInfo } from '../lib/tokens.js';
import type { Authenticator } from './auth.js';
import type { GatewayBackend } from './backend.js';
import type { GatewayMetrics } from './metrics.js';

export interface GatewayDeps {
  backend: GatewayBackend;
  metrics: GatewayMetrics;
  maxBodyBytes: number;
  maxCodeBytes: number;
  version: { release: string; sha: string };
  auth?: Authenticator;
  tokens?: TokenAdmin;
  /** Worker hosts from their heartbeats (GET /system/hosts); absent = that route answers 501. */
  hosts?: { list(): HostView[] };
  /** Builds `package` deploys (functions/package/, wired by cli/services.ts); absent: such deploys answer 501. */
  packages?: PackageBuilderPort;
  /** Largest package archive (decoded bytes); sets the deploy body limit. */
  maxPackageBytes?: number;
  /** Pulls `image` deploys (functions/oci/, wired by cli/services.ts); absent: such deploys answer 501. */
  images?: ImagePullerPort;
}

/** What the gateway needs from the image puller; errors are named `ImageError` and carry `status` and `code`. */
export interface ImagePullerPort {
  pull(
    image: string,
    envProcess?: string,
  ): Promise<{
    code: string;
    envProcess: string;
    rootfs: import('../contracts/functions.js').ImageRootfs & { data: Uint8Array };
    report: Record<string, unknown>;
  }>;
}

/** What the gateway needs from the package builder; errors carry `status`, `code` and `file`. */
export interface PackageBuilderPort {
  build(archive: Buffer, handler: string): Promise<{ code: string; handler: string; report: Record<string, unknown> }>;
}

export interface TokenAdmin {
  create(name: string): Promise<TokenInfo & { token: string }>;
  list(): Promise<TokenInfo[]>;
  revoke(id: string): Promise<boolean>;
}
