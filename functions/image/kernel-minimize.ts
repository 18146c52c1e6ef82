/**
 * Tinyx option elimination: from a starting kernel config, try each candidate
 * option off in turn: disable it (`make olddefconfig` also drops what depends
 * on it), build (incremental, cached by config hash), boot the runtime image on
 * that kernel and run a real function invocation. Success keeps the option off;
 * failure (build error, boot failure, wrong result) turns it back on.
 *
 * Resumable: the state (accepted config so far + every decision) is written
 * after each step to <cacheDir>/tinyx-minimize/<key>.json, keyed by the start
 * config, the candidate list and the test; a rerun continues where it stopped,
 * a finished run just returns its result. Progress lines carry an ETA.
 *
 * An option another option selects cannot go before that one does ("forced-on");
 * such options get a second pass once the first is through, so the order of the
 * candidate list matters less.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  buildKernel,
  configHash,
  diffConfigs,
  optionName,
  optionValue,
  resolveKernelConfig,
  setOptions,
  type BuiltKernel,
  type KernelBuildProgress,
  type KernelConfigInput,
} from './kernel-build.js';

export interface KernelTestResult {
  ok: boolean;
  /** Boot to the agent's `ready`, when it got that far. */
  bootMs?: number;
  detail: string;
}

/** Boots something on the kernel and says whether it worked. */
export type KernelTest = (kernel: BuiltKernel) => Promise<KernelTestResult>;

export type StepStatus =
  /** Off now: the test passed without it. */
  | 'removed'
  /** Back on: the kernel without it failed the test. */
  | 'kept'
  /** Back on: the kernel without it did not build. */
  | 'build-failed'
  /** Was not on in the config being minimized. */
  | 'already-off'
  /** Kconfig turns it back on (selected by another option that stays). */
  | 'forced-on';

export interface MinimizeStep {
  option: string;
  /** 1, or 2 for the retry of options that were forced on in pass 1 (what selected them may be gone now). */
  pass?: 1 | 2;
  status: StepStatus;
  /** Every option olddefconfig changed when this one went off (dependents), before -> after. */
  changed: Record<string, [string, string]>;
  triedConfigHash?: string;
  /** The kernel that was tried: file size, and bytes loaded into the guest. */
  vmlinuxBytes?: number;
  loadBytes?: number;
  bootMs?: number;
  buildMs?: number;
  buildCached?: boolean;
  stepMs: number;
  detail: string;
  at: string;
}

export interface MinimizeState {
  version: 1;
  key: string;
  testId: string;
  startConfigHash: string;
  candidates: string[];
  /** The accepted config so far (full .config text). */
  current: string;
  baseline?: { configHash: string; vmlinuxBytes: number; loadBytes?: number; bootMs?: number; release: string };
  steps: MinimizeStep[];
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
}

export interface MinimizeOptions {
  cacheDir: string;
  start: KernelConfigInput;
  /** Option names, with or without CONFIG_, tried in this order. */
  candidates: string[];
  test: KernelTest;
  /** Names the test in the state key: another test means another run. */
  testId: string;
  /** Default <cacheDir>/tinyx-minimize/<key>.json. */
  statePath?: string;
  /** Ignore a saved state and start over. */
  fresh?: boolean;
  onProgress?: (line: string) => void;
  /** Replaces buildKernel / resolveKernelConfig (unit tests). */
  build?: (input: KernelConfigInput) => Promise<BuiltKernel>;
  resolve?: (input: KernelConfigInput) => Promise<string>;
}

export interface MinimizeResult {
  state: MinimizeState;
  statePath: string;
  finalConfig: string;
  removed: string[];
  /** The kernel of the final config (built). */
  finalKernel: BuiltKernel;
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export function minimizeKey(startConfig: string, candidates: string[], testId: string): string {
  return sha256(JSON.stringify({ start: configHash(startConfig), candidates: candidates.map(optionName), testId })).slice(0, 24);
}

async function saveState(file: string, state: MinimizeState): Promise<void> {
  state.updatedAt = new Date().toISOString();
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n');
  await rename(tmp, file);
}

async function loadState(file: string, key: string): Promise<MinimizeState | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as MinimizeState;
    return s.version === 1 && s.key === key ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Parses a candidates list: comma/whitespace separated, `#` comments. */
export function parseCandidates(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    for (const word of line.replace(/#.*/, '').split(/[\s,]+/)) if (word) out.push(optionName(word));
  }
  return [...new Set(out)];
}

/** Runs (or resumes) the elimination. */
export async function minimizeKernel(opts: MinimizeOptions): Promise<MinimizeResult> {
  const say = (line: string) => {
    try {
      opts.onProgress?.(line);
    } catch {
      /* ignore */
    }
  };
  const kernelProgress = (p: KernelBuildProgress) => say(`  kernel: ${p.step}${p.detail ? ` ${p.detail}` : ''}`);
  const resolve =
    opts.resolve ?? (async (input: KernelConfigInput) => (await resolveKernelConfig({ cacheDir: opts.cacheDir, config: input, onProgress: kernelProgress })).config);
  const build = opts.build ?? ((input: KernelConfigInput) => buildKernel({ cacheDir: opts.cacheDir, config: input, onProgress: kernelProgress }));
  const candidates = [...new Set(opts.candidates.map(optionName))];

  const start = await resolve(opts.start);
  const key = minimizeKey(start, candidates, opts.testId);
  const statePath = opts.statePath ?? path.join(path.resolve(opts.cacheDir), 'tinyx-minimize', `${key}.json`);
  let state = opts.fresh ? undefined : await loadState(statePath, key);
  const now = new Date().toISOString();
  if (state) {
    say(`minimize: resuming ${statePath} (${state.steps.length}/${candidates.length} decided)`);
  } else {
    state = {
      version: 1,
      key,
      testId: opts.testId,
      startConfigHash: configHash(start),
      candidates,
      current: start,
      steps: [],
      startedAt: now,
      updatedAt: now,
    };
  }

  if (!state.baseline) {
    say(`minimize: baseline: building and testing the start config ${configHash(start).slice(0, 16)}`);
    const k = await build({ kind: 'config', text: state.current });
    const t = await opts.test(k);
    if (!t.ok) throw new Error(`the start config fails the test, nothing to minimize from: ${t.detail}`);
    state.baseline = {
      configHash: k.configHash,
      vmlinuxBytes: k.vmlinuxBytes,
      loadBytes: k.loadBytes,
      release: k.release,
      ...(t.bootMs !== undefined ? { bootMs: t.bootMs } : {}),
    };
    await saveState(statePath, state);
    say(`minimize: baseline ok: vmlinux ${(k.vmlinuxBytes / 1048576).toFixed(2)} MiB (${(k.loadBytes / 1048576).toFixed(2)} MiB loaded), boot ${t.bootMs?.toFixed(0) ?? '?'} ms`);
  }

  const decidedIn = (pass: 1 | 2) => new Set(state!.steps.filter((s) => (s.pass ?? 1) === pass).map((s) => s.option));
  const pass1 = candidates.filter((c) => !decidedIn(1).has(c));
  const runStarted = Date.now();
  let doneThisRun = 0;
  const runPass = async (pass: 1 | 2, todo: string[], total: () => number) => {
    for (const option of todo) {
      const t0 = Date.now();
      const index = state!.steps.length + 1;
      const left = total() - state!.steps.length;
      const eta = doneThisRun > 0 ? `, ETA ~${fmtDuration(((Date.now() - runStarted) / doneThisRun) * left)}` : '';
      say(`minimize: [${index}/${total()}] ${option}${pass === 2 ? ' (pass 2)' : ''}${eta}`);
      const record = async (st: Omit<MinimizeStep, 'option' | 'stepMs' | 'at' | 'pass'>) => {
        const step: MinimizeStep = { option, pass, ...st, stepMs: Date.now() - t0, at: new Date().toISOString() };
        state!.steps.push(step);
        await saveState(statePath, state!);
        doneThisRun++;
        say(`minimize: [${index}/${total()}] ${option}: ${step.status}${step.detail ? ` (${step.detail})` : ''} in ${fmtDuration(step.stepMs)}`);
      };
      await tryOption(option, record);
    }
  };
  const tryOption = async (option: string, record: (st: Omit<MinimizeStep, 'option' | 'stepMs' | 'at' | 'pass'>) => Promise<void>) => {
    if (optionValue(state!.current, option) === 'n') {
      await record({ status: 'already-off', changed: {}, detail: 'not on in the current config' });
      return;
    }
    const tried = await resolve({ kind: 'config', text: setOptions(state!.current, { [option]: 'n' }) });
    const changed = Object.fromEntries(diffConfigs(state!.current, tried));
    if (optionValue(tried, option) !== 'n') {
      await record({ status: 'forced-on', changed, detail: `olddefconfig keeps it ${optionValue(tried, option)} (selected or required by another option)` });
      return;
    }
    let kernel: BuiltKernel;
    try {
      kernel = await build({ kind: 'config', text: tried });
    } catch (err) {
      await record({ status: 'build-failed', changed, triedConfigHash: configHash(tried), detail: (err as Error).message.split('\n').slice(-3).join(' / ') });
      return;
    }
    const t = await opts.test(kernel).catch((err: unknown): KernelTestResult => ({ ok: false, detail: `test threw: ${(err as Error).message}` }));
    const common = {
      changed,
      triedConfigHash: kernel.configHash,
      vmlinuxBytes: kernel.vmlinuxBytes,
      loadBytes: kernel.loadBytes,
      buildMs: kernel.cached ? 0 : kernel.elapsedMs,
      buildCached: kernel.cached,
      ...(t.bootMs !== undefined ? { bootMs: t.bootMs } : {}),
      detail: t.detail,
    };
    if (t.ok) {
      state!.current = tried;
      await record({ status: 'removed', ...common });
    } else {
      await record({ status: 'kept', ...common });
    }
  };
  // Pass 2 candidates: forced on in pass 1 while something was removed after them.
  const pass2Todo = () => {
    const p1 = state!.steps.filter((s) => (s.pass ?? 1) === 1);
    const done2 = decidedIn(2);
    return p1
      .filter((s, i) => s.status === 'forced-on' && p1.slice(i + 1).some((l) => l.status === 'removed') && !done2.has(s.option))
      .map((s) => s.option);
  };
  const total = () => candidates.length + pass2Todo().length + decidedIn(2).size;
  await runPass(1, pass1, total);
  const retry = pass2Todo();
  if (retry.length) {
    say(`minimize: pass 2: ${retry.length} options that were forced on: ${retry.map((o) => o.replace(/^CONFIG_/, '')).join(' ')}`);
    const fixedTotal = state.steps.length + retry.length;
    await runPass(2, retry, () => fixedTotal);
  }
  if (!state.finishedAt) {
    state.finishedAt = new Date().toISOString();
    await saveState(statePath, state);
  }
  const finalKernel = await build({ kind: 'config', text: state.current });
  return {
    state,
    statePath,
    finalConfig: state.current,
    removed: state.steps.filter((s) => s.status === 'removed').map((s) => s.option),
    finalKernel,
  };
}

// ---------------------------------------------------------------------------
// report

const MiB = 1024 * 1024;

export function reportJson(state: MinimizeState): string {
  const { current, ...rest } = state;
  return JSON.stringify({ ...rest, finalConfigHash: configHash(current) }, null, 2) + '\n';
}

/** Markdown: what was removed, and size/boot time after each accepted step. */
export function reportMarkdown(state: MinimizeState, title = 'Tinyx kernel minimization'): string {
  const b = state.baseline;
  const lines: string[] = [`# ${title}`, ''];
  const removed = state.steps.filter((s) => s.status === 'removed');
  const last = removed[removed.length - 1];
  lines.push(
    `Start config ${state.startConfigHash.slice(0, 16)} (kernel ${b?.release ?? '?'}), test \`${state.testId}\`, ${state.candidates.length} candidates, ` +
      `${removed.length} removed. Started ${state.startedAt}${state.finishedAt ? `, finished ${state.finishedAt}` : ' (not finished)'}.`,
    '',
  );
  if (b) {
    const loaded = (x?: number) => (x !== undefined ? `${(x / MiB).toFixed(2)} MiB` : '?');
    lines.push(
      `Kernel loaded into the guest (PT_LOAD bytes) ${loaded(b.loadBytes)} -> ${loaded(last?.loadBytes ?? b.loadBytes)}; ` +
        `vmlinux file ${(b.vmlinuxBytes / MiB).toFixed(2)} MiB -> ${((last?.vmlinuxBytes ?? b.vmlinuxBytes) / MiB).toFixed(2)} MiB (2 MiB-aligned segments); ` +
        `boot to ready ${b.bootMs?.toFixed(0) ?? '?'} ms -> ${last?.bootMs?.toFixed(0) ?? b.bootMs?.toFixed(0) ?? '?'} ms ` +
        `(single boots under TCG on a shared machine: noisy, see the benchmark for medians).`,
      '',
    );
  }
  lines.push('| # | option | result | also changed by olddefconfig | loaded after | boot ms | build | step |', '|---|---|---|---|---|---|---|---|');
  state.steps.forEach((s, i) => {
    const also = Object.entries(s.changed)
      .filter(([k]) => k !== s.option)
      .map(([k, [a, z]]) => `${k.replace(/^CONFIG_/, '')} ${a}→${z}`);
    const size = s.status === 'removed' && (s.loadBytes ?? s.vmlinuxBytes) ? `${((s.loadBytes ?? s.vmlinuxBytes)! / MiB).toFixed(3)} MiB` : '';
    const boot = s.bootMs !== undefined ? s.bootMs.toFixed(0) : '';
    const build = s.buildCached ? 'cached' : s.buildMs ? fmtDuration(s.buildMs) : '';
    const result = s.status === 'removed' ? '**removed**' : s.status;
    const detail = s.status === 'removed' || !s.detail ? '' : ` (${s.detail.replace(/\|/g, '\\|').slice(0, 160)})`;
    lines.push(
      `| ${i + 1} | ${s.option.replace(/^CONFIG_/, '')}${s.pass === 2 ? ' (pass 2)' : ''} | ${result}${detail} | ${also.slice(0, 12).join(', ')}${also.length > 12 ? ` …+${also.length - 12}` : ''} | ${size} | ${boot} | ${build} | ${fmtDuration(s.stepMs)} |`,
    );
  });
  lines.push('');
  return lines.join('\n');
}
