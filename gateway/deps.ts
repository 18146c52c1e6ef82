/** What the route handlers share: the backend, the metrics and the limits. */
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
}

export interface TokenAdmin {
  create(name: string): Promise<TokenInfo & { token: string }>;
  list(): Promise<TokenInfo[]>;
  revoke(id: string): Promise<boolean>;
}
