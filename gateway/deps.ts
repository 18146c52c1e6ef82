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
