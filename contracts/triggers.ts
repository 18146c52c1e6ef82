/**
 * Triggers: NATS subjects and schedules that become async calls (issue 15).
 * Names of annotations, the capture stream, its consumer, the schedules KV
 * bucket, the headers a trigger call carries, and GET /system/triggers.
 *
 *   publisher --publish <subject>--> STREAMS.triggers (capture stream over every `topic` subject,
 *             kept in step with the deployed functions by lib/trigger-stream.ts)
 *   scheduler --pull TRIGGER_CONSUMER--> one async call per matching function (record `queued`,
 *             Nats-Msg-Id = call id on SUBJECTS.asyncSubmit), then ack
 *   scheduler --every tick of a `schedule`--> the same, with call id `<fn>.tick-<ms>` (deduplicated)
 *
 * From there the call is an ordinary async call (scheduler/async-consumer.ts):
 * retries, the dead state, one final record, and the result delivered once to
 * the reply subject when there is one.
 */
import { z } from 'zod';

export const TRIGGER_ANNOTATIONS = {
  /** Comma-separated NATS subjects (wildcards allowed), OpenFaaS connector style; `cron-function` with `schedule`. */
  topic: 'topic',
  /** 5-field cron (UTC; a 6th leading seconds field is accepted), `@hourly`-style nicknames, or `@every 30s`. */
  schedule: 'schedule',
  /** "true": after downtime, fire the ticks missed since the last one (at most TRIGGER_LIMITS.catchUpTicks). */
  catchUp: 'com.mayfly.schedule_catchup',
  /** Subject the result of every trigger call of this function is published to (chaining functions). */
  replySubject: 'com.mayfly.reply_subject',
} as const;

/** The `topic` value that marks a scheduled function (OpenFaaS cron-connector); it is not a subject. */
export const CRON_TOPIC = 'cron-function';

export const TRIGGER_STREAM = 'MAYFLY_TRIGGERS';
/** Durable pull consumer over the whole capture stream, shared by every scheduler replica. */
export const TRIGGER_CONSUMER = 'mayfly-trigger-mapper';
/** KV bucket: function name → last tick fired (for catch-up). */
export const SCHEDULES_BUCKET = 'mayfly_schedules';

/**
 * Subjects a trigger may not capture: Mayfly's own bus, JetStream's API and
 * KV/object store subjects ($...), inboxes. A topic must start with a literal token.
 */
export const RESERVED_SUBJECT_PREFIXES = ['mayfly.', '$', '_INBOX.'] as const;

export const TRIGGER_LIMITS = {
  /** Subjects in one function's `topic`. */
  subjectsPerFunction: 32,
  /** Missed ticks a catch-up fires at most, oldest dropped first. */
  catchUpTicks: 100,
  /** Shortest `@every` interval. */
  minIntervalMs: 1000,
} as const;

/** Headers a trigger call's event carries (lower case, as the gateway's events). */
export const TRIGGER_HEADERS = {
  /** The subject the message was published on, or `cron-function` for a tick (OpenFaaS connectors). */
  topic: 'x-topic',
  /** The message's Nats-Msg-Id, when it had one. */
  msgId: 'x-nats-msg-id',
  /** Stream sequence of the captured message. */
  sequence: 'x-mayfly-trigger-seq',
  /** The tick's scheduled time (ISO 8601, UTC). */
  tick: 'x-mayfly-tick',
  schedule: 'x-mayfly-schedule',
  /** A message header naming a subject to publish this message's results to (overrides com.mayfly.reply_subject). */
  replySubject: 'mayfly-reply-subject',
} as const;

/** `callbackUrl` of an async call whose result goes to a NATS subject, not an HTTP URL. */
export const NATS_CALLBACK_PROTOCOL = 'nats:';

export const triggerSubjectEntrySchema = z.object({
  subject: z.string(),
  functions: z.array(z.string()),
});

export const triggerScheduleEntrySchema = z.object({
  function: z.string(),
  schedule: z.string(),
  catchUp: z.boolean(),
  /** The next fire times (ISO 8601, UTC). */
  nextRuns: z.array(z.string()),
});

/** Body of GET /system/triggers. */
export const triggerListSchema = z.object({
  stream: z.string(),
  subjects: z.array(triggerSubjectEntrySchema),
  schedules: z.array(triggerScheduleEntrySchema),
});
export type TriggerList = z.infer<typeof triggerListSchema>;
