/**
 * MAYFLY_JS_REPLICAS, per NATS connection: the replicas of every stream, KV
 * bucket and object store Mayfly creates through that connection (1 on one
 * nats-server, 3 on a 3-node cluster: each survives the loss of one node).
 * Set once by connectNats from the service's config; stores read it where they
 * create themselves. Existing streams and buckets keep their replicas.
 */
import type { NatsConnection } from '@nats-io/transport-node';

const byConnection = new WeakMap<NatsConnection, number>();

export function setJsReplicas(nc: NatsConnection, replicas: number): void {
  byConnection.set(nc, replicas);
}

/** Replicas for what this connection creates (1 when the connection was not made by connectNats). */
export function jsReplicas(nc: NatsConnection): number {
  return byConnection.get(nc) ?? 1;
}
