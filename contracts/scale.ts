/**
 * OpenFaaS's scaling labels and `replicas`, in Mayfly's terms: a replica is a
 * VM of the function kept ready on a worker host (a snapshot clone, resumed,
 * warmed up and paused: LightVM's "pre-created" VM per function), so the call
 * that comes finds it without a boot or a module load.
 *
 *   com.openfaas.scale.min   ready VMs to keep at least (default: none kept on purpose)
 *   com.openfaas.scale.max   the most `replicas` may be set to (default MAX_REPLICAS)
 *   com.openfaas.scale.zero  accepted; Mayfly scales to zero between calls anyway
 *
 * POST /system/scale-function/{name} sets `replicas` (stored with the function,
 * same version: no VM is invalidated); without it the min label is the target.
 */
import type { FunctionRecord } from './functions.js';

export const SCALE_MIN_LABEL = 'com.openfaas.scale.min';
export const SCALE_MAX_LABEL = 'com.openfaas.scale.max';
export const SCALE_ZERO_LABEL = 'com.openfaas.scale.zero';
/** The most ready VMs one function may ask for (per worker host). */
export const MAX_REPLICAS = 32;

export class ScaleLabelError extends Error {
  constructor(
    readonly label: string,
    message: string,
  ) {
    super(message);
    this.name = 'ScaleLabelError';
  }
}

function readCount(labels: Record<string, string>, label: string): number | undefined {
  const v = labels[label];
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v.trim()) || Number(v) > MAX_REPLICAS) {
    throw new ScaleLabelError(label, `label ${label} must be a whole number from 0 to ${MAX_REPLICAS} (as a string, e.g. "2"), not ${JSON.stringify(v)}`);
  }
  return Number(v);
}

/** The scale labels of a deploy (labels, or annotations as some stacks put them): throws ScaleLabelError naming the label. */
export function scaleLimits(fn: { labels?: Record<string, string>; annotations?: Record<string, string> }): { min?: number; max: number } {
  const all = { ...(fn.annotations ?? {}), ...(fn.labels ?? {}) };
  const min = readCount(all, SCALE_MIN_LABEL);
  const max = readCount(all, SCALE_MAX_LABEL) ?? MAX_REPLICAS;
  const zero = all[SCALE_ZERO_LABEL];
  if (zero !== undefined && !['true', 'false'].includes(zero)) throw new ScaleLabelError(SCALE_ZERO_LABEL, `label ${SCALE_ZERO_LABEL} must be "true" or "false"`);
  if (min !== undefined && min > max) throw new ScaleLabelError(SCALE_MIN_LABEL, `label ${SCALE_MIN_LABEL} (${min}) is above ${SCALE_MAX_LABEL} (${max})`);
  return { ...(min !== undefined ? { min } : {}), max };
}

/** Ready VMs the function asks for: set by scale-function, else its min label; undefined when it has neither (scale from zero). */
export function desiredReplicas(fn: Pick<FunctionRecord, 'labels' | 'annotations'> & { replicas?: number | undefined }): number | undefined {
  let limits: { min?: number; max: number };
  try {
    limits = scaleLimits(fn);
  } catch {
    return fn.replicas;
  }
  if (fn.replicas !== undefined) return Math.min(fn.replicas, limits.max);
  return limits.min;
}
