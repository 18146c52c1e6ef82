/**
 * Triggers, read from the function specs (contracts/triggers.ts):
 *   GET /system/triggers   subjects with the functions they trigger, schedules with their next fire times
 * and the `schedule` entry of GET /system/function(s) (next fire times).
 */
import type { RouteHandlerMethod } from 'fastify';
import type { FunctionRecord } from '../../contracts/functions.js';
import { TRIGGER_STREAM, type TriggerList } from '../../contracts/triggers.js';
import { nextRuns, parseSchedule, topicSubjects, wantsCatchUp } from '../../lib/trigger-annotations.js';
import type { GatewayDeps } from '../deps.js';

/** How many next fire times are shown. */
export const NEXT_RUNS_SHOWN = 5;

/** The `schedule` field of a function's status: its expression and next fire times; undefined without one. */
export function scheduleStatus(fn: Pick<FunctionRecord, 'annotations'>, now = Date.now()): { expression: string; catchUp: boolean; nextRuns: string[] } | undefined {
  let schedule;
  try {
    schedule = parseSchedule(fn.annotations);
  } catch {
    return undefined; // checked at deploy
  }
  if (!schedule) return undefined;
  return {
    expression: schedule.expression,
    catchUp: wantsCatchUp(fn.annotations),
    nextRuns: nextRuns(schedule, NEXT_RUNS_SHOWN, now).map((t) => new Date(t).toISOString()),
  };
}

export function triggerList(fns: FunctionRecord[], now = Date.now()): TriggerList {
  const bySubject = new Map<string, string[]>();
  const schedules: TriggerList['schedules'] = [];
  for (const fn of fns) {
    let subjects: string[] = [];
    try {
      subjects = topicSubjects(fn.annotations);
    } catch {
      // checked at deploy
    }
    for (const s of subjects) bySubject.set(s, [...(bySubject.get(s) ?? []), fn.name]);
    const st = scheduleStatus(fn, now);
    if (st) schedules.push({ function: fn.name, schedule: st.expression, catchUp: st.catchUp, nextRuns: st.nextRuns });
  }
  return {
    stream: TRIGGER_STREAM,
    subjects: [...bySubject].sort(([a], [b]) => (a < b ? -1 : 1)).map(([subject, functions]) => ({ subject, functions: functions.sort() })),
    schedules: schedules.sort((a, b) => (a.function < b.function ? -1 : 1)),
  };
}

export function listTriggers(deps: GatewayDeps): RouteHandlerMethod {
  return async () => triggerList(await deps.backend.listFunctions());
}
