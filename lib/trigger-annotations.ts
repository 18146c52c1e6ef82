/**
 * The trigger annotations of a function (contracts/triggers.ts), parsed and
 * checked: `topic` subjects, `schedule` (cron by croner, or `@every <n><unit>`),
 * catch-up and reply subject. Used by the gateway (400s at deploy, next fire
 * times) and by the scheduler (subscriptions, ticks). Pure: no I/O.
 */
import { Cron } from 'croner';
import {
  CRON_TOPIC,
  RESERVED_SUBJECT_PREFIXES,
  TRIGGER_ANNOTATIONS,
  TRIGGER_LIMITS,
} from '../contracts/triggers.js';

/** A trigger annotation the user must fix; `annotation` names it (for the 400). */
export class TriggerAnnotationError extends Error {
  constructor(
    readonly annotation: string,
    message: string,
  ) {
    super(message);
    this.name = 'TriggerAnnotationError';
  }
}

/** A NATS subject a publisher may use or a consumer filter may name: tokens split by ".", `*` and a last `>` as whole tokens. */
export function isValidSubject(subject: string): boolean {
  if (subject.length === 0 || subject.length > 255 || /[\s\u0000]/.test(subject)) return false;
  const tokens = subject.split('.');
  return tokens.every((t, i) => t.length > 0 && (t === '>' ? i === tokens.length - 1 : t === '*' || !/[*>]/.test(t)));
}

/** Whether `pattern` (with wildcards) matches every subject `other` can match (so `other` is redundant). */
export function subjectCovers(pattern: string, other: string): boolean {
  const p = pattern.split('.');
  const o = other.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return o.length > i;
    if (i >= o.length) return false;
    if (o[i] === '>') return false;
    if (p[i] !== '*' && p[i] !== o[i]) return false;
    if (p[i] === '*' && o[i] === '>') return false;
  }
  return p.length === o.length;
}

/** Whether a concrete subject matches a pattern. */
export function subjectMatches(pattern: string, subject: string): boolean {
  return subjectCovers(pattern, subject);
}

/** The subjects of `topic` (not `cron-function`), checked; [] when the function has no subject trigger. */
export function topicSubjects(annotations: Record<string, string>): string[] {
  const raw = annotations[TRIGGER_ANNOTATIONS.topic];
  if (raw === undefined) return [];
  const name = TRIGGER_ANNOTATIONS.topic;
  const parts = raw.split(',').map((s) => s.trim());
  if (parts.some((p) => p === '')) {
    throw new TriggerAnnotationError(name, `annotation "${name}": ${JSON.stringify(raw)} has an empty subject; write comma-separated NATS subjects like "orders.created,orders.*"`);
  }
  const subjects = [...new Set(parts.filter((p) => p !== CRON_TOPIC))];
  if (subjects.length > TRIGGER_LIMITS.subjectsPerFunction) {
    throw new TriggerAnnotationError(name, `annotation "${name}": ${subjects.length} subjects, at most ${TRIGGER_LIMITS.subjectsPerFunction}`);
  }
  for (const s of subjects) {
    if (!isValidSubject(s)) {
      throw new TriggerAnnotationError(
        name,
        `annotation "${name}": ${JSON.stringify(s)} is not a valid NATS subject (tokens separated by ".", no spaces, "*" and a last ">" only as whole tokens)`,
      );
    }
    const first = s.split('.')[0]!;
    if (first === '*' || first === '>') {
      throw new TriggerAnnotationError(name, `annotation "${name}": ${JSON.stringify(s)} must start with a literal token (e.g. "orders.>"), not a wildcard`);
    }
    const reserved = RESERVED_SUBJECT_PREFIXES.find((p) => s.startsWith(p) || `${s}.` === p);
    if (reserved) {
      throw new TriggerAnnotationError(name, `annotation "${name}": ${JSON.stringify(s)} is reserved for the platform (subjects starting with "${reserved}")`);
    }
  }
  return subjects;
}

/** A parsed `schedule`: the next fire time strictly after a given time. */
export interface Schedule {
  expression: string;
  /** Next fire time after `afterMs` (ms since epoch), or null when it never fires again. */
  next(afterMs: number): number | null;
}

const EVERY = /^@every\s+(\d+)\s*(ms|s|m|h)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** The function's schedule, checked; null when it has none. */
export function parseSchedule(annotations: Record<string, string>): Schedule | null {
  const raw = annotations[TRIGGER_ANNOTATIONS.schedule];
  if (raw === undefined) return null;
  const name = TRIGGER_ANNOTATIONS.schedule;
  const expression = raw.trim();
  const every = EVERY.exec(expression);
  if (every) {
    const interval = Number(every[1]) * UNIT_MS[every[2] as keyof typeof UNIT_MS];
    if (interval < TRIGGER_LIMITS.minIntervalMs) {
      throw new TriggerAnnotationError(name, `annotation "${name}": ${JSON.stringify(raw)} is shorter than the minimum interval of ${TRIGGER_LIMITS.minIntervalMs / 1000}s`);
    }
    // Ticks at multiples of the interval since the epoch: every replica computes the same ones.
    return { expression, next: (after) => (Math.floor(after / interval) + 1) * interval };
  }
  if (expression.startsWith('@every')) {
    throw new TriggerAnnotationError(name, `annotation "${name}": ${JSON.stringify(raw)} is not a valid interval; write "@every 30s" (units ms, s, m, h)`);
  }
  let cron: Cron;
  try {
    cron = new Cron(expression, { timezone: 'UTC', paused: true, mode: '5-or-6-parts' });
  } catch (err) {
    throw new TriggerAnnotationError(
      name,
      `annotation "${name}": ${JSON.stringify(raw)} is not a valid cron expression (${(err as Error).message}); write 5 fields "min hour day month weekday" in UTC like "*/5 * * * *", a nickname like "@hourly", or "@every 30s"`,
    );
  }
  if (cron.nextRun(new Date()) === null) {
    throw new TriggerAnnotationError(name, `annotation "${name}": ${JSON.stringify(raw)} never fires`);
  }
  return {
    expression,
    next: (after) => cron.nextRun(new Date(after))?.getTime() ?? null,
  };
}

/** The next `n` fire times after `afterMs`. */
export function nextRuns(schedule: Schedule, n: number, afterMs = Date.now()): number[] {
  const out: number[] = [];
  let t = afterMs;
  while (out.length < n) {
    const next = schedule.next(t);
    if (next === null) break;
    out.push(next);
    t = next;
  }
  return out;
}

export function wantsCatchUp(annotations: Record<string, string>): boolean {
  return annotations[TRIGGER_ANNOTATIONS.catchUp] === 'true';
}

/** The function's reply subject annotation, checked; undefined when none. */
export function replySubject(annotations: Record<string, string>): string | undefined {
  const name = TRIGGER_ANNOTATIONS.replySubject;
  const raw = annotations[name];
  if (raw === undefined) return undefined;
  const why = replySubjectProblem(raw);
  if (why) throw new TriggerAnnotationError(name, `annotation "${name}": ${why}`);
  return raw;
}

/** Why `subject` cannot receive results (null when it can): a subject without wildcards, outside the platform's own. */
export function replySubjectProblem(subject: string): string | null {
  if (!isValidSubject(subject) || /[*>]/.test(subject)) return `${JSON.stringify(subject)} is not a NATS subject without wildcards`;
  const reserved = RESERVED_SUBJECT_PREFIXES.find((p) => subject.startsWith(p));
  return reserved ? `${JSON.stringify(subject)} is reserved for the platform (subjects starting with "${reserved}")` : null;
}

/** Every trigger annotation of a deploy, checked (throws TriggerAnnotationError). */
export function checkTriggerAnnotations(annotations: Record<string, string>): void {
  topicSubjects(annotations);
  const schedule = parseSchedule(annotations);
  replySubject(annotations);
  const catchUp = annotations[TRIGGER_ANNOTATIONS.catchUp];
  if (catchUp !== undefined && catchUp !== 'true' && catchUp !== 'false') {
    throw new TriggerAnnotationError(TRIGGER_ANNOTATIONS.catchUp, `annotation "${TRIGGER_ANNOTATIONS.catchUp}" must be "true" or "false"`);
  }
  if (schedule && !(annotations[TRIGGER_ANNOTATIONS.topic] ?? '').split(',').map((s) => s.trim()).includes(CRON_TOPIC)) {
    throw new TriggerAnnotationError(
      TRIGGER_ANNOTATIONS.topic,
      `annotation "${TRIGGER_ANNOTATIONS.schedule}" needs annotation "${TRIGGER_ANNOTATIONS.topic}" to include "${CRON_TOPIC}" (OpenFaaS cron-connector convention)`,
    );
  }
}

/** Minimal set of subjects capturing all of `subjects`: one that another covers is left out. */
export function minimalSubjects(subjects: Iterable<string>): string[] {
  const all = [...new Set(subjects)].sort();
  return all.filter((s) => !all.some((o) => o !== s && subjectCovers(o, s)));
}
