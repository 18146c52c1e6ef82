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
}

export interface TokenAdmin {
  create(name: string): Promise<TokenInfo & { token: string }>;
  list(): Promise<TokenInfo[]>;
  revoke(id: string): Promise<boolean>;
}
