/**
 * The scheduler's view of the functions that have triggers: reloaded when the
 * functions bucket changed (one KV status request per MAYFLY_TRIGGER_REFRESH_MS,
 * which survives nats-server restarts without watch bookkeeping), and on demand
 * when a message matches no function (a deploy this replica has not seen yet).
 */
import { Kvm, type KV } from '@nats-io/kv';
import { STORES } from '../../contracts/bus.js';
import type { FunctionRecord } from '../../contracts/functions.js';
import type { Logger } from '../../lib/logger.js';
import type { NatsConnection } from '../../lib/nats.js';
import { FunctionStore } from '../../lib/function-store.js';
import { parseSchedule, subjectMatches, topicSubjects, type Schedule } from '../../lib/trigger-annotations.js';

export interface SubjectTrigger {
  fn: FunctionRecord;
  /** The topic subject (pattern) of the function. */
  pattern: string;
}

export interface ScheduledFunction {
  fn: FunctionRecord;
  schedule: Schedule;
}

export class FunctionView {
  private kv: KV | null = null;
  private lastSeq = -1;
  private subjects: SubjectTrigger[] = [];
  private scheduled = new Map<string, ScheduledFunction>();
  private loading: Promise<boolean> | null = null;

  constructor(
    private readonly nc: NatsConnection,
    private readonly store: FunctionStore,
    private readonly log: Logger,
  ) {}

  /** Last sequence of the functions bucket this view reflects (changes with every deploy, update, removal). */
  get revision(): number {
    return this.lastSeq;
  }

  /** Functions whose topic matches `subject`, with the pattern that matched (one per function). */
  match(subject: string): SubjectTrigger[] {
    const out = new Map<string, SubjectTrigger>();
    for (const t of this.subjects) if (!out.has(t.fn.name) && subjectMatches(t.pattern, subject)) out.set(t.fn.name, t);
    return [...out.values()];
  }

  schedules(): ReadonlyMap<string, ScheduledFunction> {
    return this.scheduled;
  }

  functions(): FunctionRecord[] {
    return [...new Map([...this.subjects.map((t) => t.fn), ...[...this.scheduled.values()].map((s) => s.fn)].map((f) => [f.name, f])).values()];
  }

  /** Reloads when the bucket changed (or always with `force`); resolves true when the view changed. */
  refresh(force = false): Promise<boolean> {
    this.loading ??= this.load(force).finally(() => (this.loading = null));
    return this.loading;
  }

  private async load(force: boolean): Promise<boolean> {
    this.kv ??= await new Kvm(this.nc).open(STORES.functions);
    const seq = (await this.kv.status()).streamInfo.state.last_seq;
    if (!force && seq === this.lastSeq) return false;
    const fns = await this.store.list();
    const subjects: SubjectTrigger[] = [];
    const scheduled = new Map<string, ScheduledFunction>();
    for (const fn of fns) {
      try {
        for (const pattern of topicSubjects(fn.annotations)) subjects.push({ fn, pattern });
        const schedule = parseSchedule(fn.annotations);
        if (schedule) scheduled.set(fn.name, { fn, schedule });
      } catch (err) {
        this.log.warn({ fn: fn.name, err: (err as Error).message }, 'ignoring the invalid triggers of a function');
      }
    }
    const changed = seq !== this.lastSeq;
    this.subjects = subjects;
    this.scheduled = scheduled;
    this.lastSeq = seq;
    return changed;
  }
}
