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

/**
 * Options for a KV bucket: its replicas and, when replicated, reads from the stream leader only
 * (allow_direct off). With direct gets a follower that is behind may answer a read with an older
 * value, and Mayfly reads a call record right after writing it (compare-and-set of the callback
 * claim): seen in the cluster fault test as calls whose callback was never claimed.
 */
export function kvReplicas(nc: NatsConnection): { replicas: number; allow_direct?: boolean } {
  const replicas = jsReplicas(nc);
  return replicas > 1 ? { replicas, allow_direct: false } : { replicas };
}
