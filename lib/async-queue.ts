/**
 * The async work queue: a JetStream work-queue stream (file storage, survives a
 * nats-server restart) and one durable pull consumer shared by every scheduler
 * replica. Publishing uses Nats-Msg-Id = call id, so a retried publish is
 * stored once. A message leaves the stream only when a scheduler acks it,
 * after the call's final record is written.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type JetStreamClient,
} from '@nats-io/jetstream';
import { ASYNC_CONSUMER, STREAMS, SUBJECTS, type AsyncCall } from '../contracts/bus.js';
import { jsonCodec } from './nats.js';
import { jsReplicas } from './js-replicas.js';

const NS_PER_MS = 1_000_000;

export interface AsyncQueueOptions {
  /** How long a message may go without ack or working() before it is redelivered. */
  ackWaitMs: number;
}

export async function ensureAsyncStream(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const config = {
    name: STREAMS.async,
    subjects: [SUBJECTS.asyncSubmit],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: 10 * 60 * 1000 * NS_PER_MS,
    max_age: 7 * 24 * 3600 * 1000 * NS_PER_MS,
    num_replicas: jsReplicas(nc),
  };
  try {
    await jsm.streams.info(STREAMS.async);
  } catch {
    await jsm.streams.add(config);
  }
}

export async function asyncConsumer(nc: NatsConnection, opts: AsyncQueueOptions): Promise<Consumer> {
  await ensureAsyncStream(nc);
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.consumers.info(STREAMS.async, ASYNC_CONSUMER);
  } catch {
    await jsm.consumers.add(STREAMS.async, {
      durable_name: ASYNC_CONSUMER,
      ack_policy: AckPolicy.Explicit,
      ack_wait: opts.ackWaitMs * NS_PER_MS,
      max_deliver: -1,
      filter_subject: SUBJECTS.asyncSubmit,
    });
  }
  return jetstream(nc).consumers.get(STREAMS.async, ASYNC_CONSUMER);
}

export class AsyncPublisher {
  private readonly js: JetStreamClient;
  constructor(nc: NatsConnection) {
    this.js = jetstream(nc);
  }

  /** Resolves once JetStream has stored the call; `duplicate` when this call id was stored before. */
  async publish(call: AsyncCall): Promise<{ duplicate: boolean }> {
    const ack = await this.js.publish(SUBJECTS.asyncSubmit, jsonCodec.encode(call), { msgID: call.callId });
    return { duplicate: ack.duplicate };
  }
}
