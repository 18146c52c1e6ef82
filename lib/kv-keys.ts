/**
 * The keys of a KV bucket, from its stream's subject index (one `STREAM.INFO`
 * request with `subjects_filter`), instead of `kv.keys()`. `kv.keys()` walks an
 * ordered consumer until it reports nothing pending, and on nats-server 2.9
 * (Debian's 2.9.10) that walk can wait forever once keys were deleted or expired
 * (nats-server#3481): a deploy or a list then hangs. The subject index is exact
 * and answered at once; keys whose last entry is a delete marker are included,
 * so callers read each key and skip the deleted ones, as before.
 */
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

const managers = new WeakMap<NatsConnection, Promise<JetStreamManager>>();

export async function kvKeys(nc: NatsConnection, bucket: string): Promise<string[]> {
  let jsm = managers.get(nc);
  if (!jsm) {
    jsm = jetstreamManager(nc);
    managers.set(nc, jsm);
  }
  const prefix = `$KV.${bucket}.`;
  const info = await (await jsm).streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` });
  return Object.keys(info.state.subjects ?? {})
    .filter((s) => s.startsWith(prefix))
    .map((s) => s.slice(prefix.length));
}
