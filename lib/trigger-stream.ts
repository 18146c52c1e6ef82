/**
 * The capture stream of subject triggers (contracts/triggers.ts): one
 * JetStream stream over the `topic` subjects of every deployed function
 * (nats-server 2.9 allows one filter subject per consumer, so one stream and
 * one consumer that maps each message to its functions). The gateway brings
 * its subjects in step right after a deploy, update or removal (so a message
 * published after the 202 is captured even while no scheduler runs); the
 * scheduler does it again on every change of the functions bucket, which
 * repairs any race between two gateways.
 *
 * Work-queue retention: a message leaves the stream when the scheduler acks
 * it, after its async calls are stored. Nats-Msg-Id deduplicates publishes
 * within the duplicate window.
 */
import {
  AckPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { FunctionRecord } from '../contracts/functions.js';
import { TRIGGER_CONSUMER, TRIGGER_STREAM } from '../contracts/triggers.js';
import { minimalSubjects, topicSubjects } from './trigger-annotations.js';
import { jsReplicas } from './js-replicas.js';

const NS_PER_MS = 1_000_000;
/** The stream needs a subject even when no function has a topic: a platform subject nobody publishes on. */
export const IDLE_SUBJECT = 'mayfly.triggers.idle';
/** How long a captured message may wait for a scheduler before it expires (7 days, like the async queue). */
export const TRIGGER_MAX_AGE_MS = 7 * 24 * 3600 * 1000;
/** Window in which a repeated Nats-Msg-Id is stored once. */
export const TRIGGER_DUPLICATE_WINDOW_MS = 10 * 60 * 1000;

/** A trigger subject that another stream captures already (nats-server refuses overlapping streams). */
export class TriggerSubjectConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TriggerSubjectConflict';
  }
}

/** Every subject the stream must capture for these functions (functions with invalid annotations are skipped). */
export function captureSubjects(functions: Iterable<Pick<FunctionRecord, 'annotations'>>): string[] {
  const all: string[] = [];
  for (const f of functions) {
    try {
      all.push(...topicSubjects(f.annotations));
    } catch {
      // checked at deploy; a record written otherwise is ignored rather than breaking everyone's triggers
    }
  }
  const subjects = minimalSubjects(all);
  return subjects.length > 0 ? subjects : [IDLE_SUBJECT];
}

function streamConfig(subjects: string[], replicas: number): Partial<StreamConfig> & { name: string } {
  return {
    num_replicas: replicas,
    name: TRIGGER_STREAM,
    subjects,
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: TRIGGER_DUPLICATE_WINDOW_MS * NS_PER_MS,
    max_age: TRIGGER_MAX_AGE_MS * NS_PER_MS,
  };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

/**
 * Makes the stream capture exactly `subjects`. Creates the stream when it is
 * missing. Throws TriggerSubjectConflict when another stream holds one of them.
 */
export async function setCaptureSubjects(nc: NatsConnection, subjects: string[], jsm?: JetStreamManager): Promise<void> {
  const m = jsm ?? (await jetstreamManager(nc));
  let current: string[] | null = null;
  try {
    current = (await m.streams.info(TRIGGER_STREAM)).config.subjects ?? [];
  } catch {
    current = null;
  }
  try {
    if (current === null) await m.streams.add(streamConfig(subjects, jsReplicas(nc)));
    else if (!sameSet(current, subjects)) await m.streams.update(TRIGGER_STREAM, { subjects });
  } catch (err) {
    const msg = (err as Error).message;
    if (/overlap/i.test(msg)) throw new TriggerSubjectConflict(`a trigger subject is captured by another JetStream stream already: ${msg}`);
    throw err;
  }
}

/** Brings the capture stream in step with these functions. */
export async function syncTriggerStream(nc: NatsConnection, functions: Iterable<Pick<FunctionRecord, 'annotations'>>): Promise<string[]> {
  const subjects = captureSubjects(functions);
  await setCaptureSubjects(nc, subjects);
  return subjects;
}

/** The durable pull consumer over the whole capture stream (created when missing). */
export async function triggerConsumer(nc: NatsConnection, opts: { ackWaitMs: number }): Promise<Consumer> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(TRIGGER_STREAM);
  } catch {
    await setCaptureSubjects(nc, [IDLE_SUBJECT], jsm);
  }
  try {
    await jsm.consumers.info(TRIGGER_STREAM, TRIGGER_CONSUMER);
  } catch {
    await jsm.consumers.add(TRIGGER_STREAM, {
      durable_name: TRIGGER_CONSUMER,
      ack_policy: AckPolicy.Explicit,
      ack_wait: opts.ackWaitMs * NS_PER_MS,
      max_deliver: -1,
    });
  }
  return jetstream(nc).consumers.get(TRIGGER_STREAM, TRIGGER_CONSUMER);
}
