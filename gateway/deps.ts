/** What the route handlers share: the backend, the metrics and the limits. */
import type { GatewayBackend } from './backend.js';
import type { GatewayMetrics } from './metrics.js';

export interface GatewayDeps {
  backend: GatewayBackend;
  metrics: GatewayMetrics;
  maxBodyBytes: number;
  maxCodeBytes: number;
  version: { release: string; sha: string };
}
