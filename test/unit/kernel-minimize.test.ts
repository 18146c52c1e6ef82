/**
 * The elimination loop's logic with a simulated Kconfig and test (the real
 * builds and boots are in test/integration/tinyx-minimize.test.ts): decisions,
 * dependents, forced options, build failures, resuming, the report.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { configHash, optionValue, parseKconfig, setOptions, type BuiltKernel, type KernelConfigInput } from '../../functions/image/kernel-build.js';
import { minimizeKernel, reportJson, reportMarkdown } from '../../functions/image/kernel-minimize.js';

const START = ['CONFIG_A=y', 'CONFIG_B=y', 'CONFIG_C=y', 'CONFIG_D=y', 'CONFIG_E=y', 'CONFIG_F=y', '# CONFIG_G is not set', ''].join('\n');

/** olddefconfig stand-in: C depends on B; E is selected by F. */
function olddefconfig(text: string): string {
  let t = text;
  if (optionValue(t, 'B') === 'n') t = setOptions(t, { C: 'n' });
  if (optionValue(t, 'F') === 'y') t = setOptions(t, { E: 'y' });
  return t;
}

let dirs: string[] = [];
afterEach(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function harness(opts: { brokenBuild?: string[]; crashOn?: boolean }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfmin-'));
  dirs.push(dir);
  const builds: string[] = [];
  const texts = new Map<string, string>();
  /** Whether the kernel was built without `opt`. */
  const lacks = (k: BuiltKernel, opt: string) => optionValue(texts.get(k.configHash)!, opt) === 'n';
  const tests: string[] = [];
  const textOf = (i: KernelConfigInput) => (i.kind === 'config' ? i.text! : START);
  let crashed = false;
  const resolve = async (i: KernelConfigInput) => {
    // A crash of the whole run (the process dies) while it works on CONFIG_B, once.
    if (opts.crashOn && !crashed && optionValue(textOf(i), 'B') === 'n') {
      crashed = true;
      throw new Error('simulated crash of the whole run');
    }
    return olddefconfig(textOf(i));
  };
  const build = async (i: KernelConfigInput): Promise<BuiltKernel> => {
    const text = textOf(i);
    const on = [...parseKconfig(text)].filter(([, v]) => v === 'y').map(([k]) => k);
    for (const b of opts.brokenBuild ?? []) if (!on.includes(b)) throw new Error(`make: error without ${b}`);
    builds.push(configHash(text));
    texts.set(configHash(text), text);
    return {
      id: `k-${configHash(text).slice(0, 8)}`, sourcePackage: 'linux-source-6.1', sourceVersion: 't', release: '6.1-t',
      configHash: configHash(text), vmlinuxPath: '/dev/null', configPath: '/dev/null', vmlinuxBytes: 1000 * on.length, loadBytes: 900 * on.length,
      bootArgs: [], machineOptions: [], buildMs: 1, cached: false, elapsedMs: 1,
    };
  };
  const test = async (k: BuiltKernel) => {
    tests.push(k.configHash);
    return { ok: true, bootMs: 100, detail: 'ok' };
  };
  return { dir, builds, tests, resolve, build, test, lacks };
}

describe('minimizeKernel (simulated Kconfig)', () => {
  it('removes what the test does not need, keeps what it needs, reports dependents and forced options', async () => {
    const h = harness({});
    const r = await minimizeKernel({
      cacheDir: h.dir, start: { kind: 'config', text: START }, testId: 't',
      candidates: ['B', 'C', 'D', 'E', 'G'],
      resolve: h.resolve, build: h.build,
      test: async (k) => (h.lacks(k, 'D') ? { ok: false, detail: 'no D: boot failed' } : { ok: true, bootMs: 100, detail: 'ok' }),
    });
    const by = Object.fromEntries(r.state.steps.map((s) => [s.option, s.status]));
    expect(by).toEqual({
      CONFIG_B: 'removed', // and C with it (dependent)
      CONFIG_C: 'already-off',
      CONFIG_D: 'kept',
      CONFIG_E: 'forced-on', // selected by F
      CONFIG_G: 'already-off',
    });
    expect(r.state.steps[0]!.changed).toEqual({ CONFIG_B: ['y', 'n'], CONFIG_C: ['y', 'n'] });
    expect(r.removed).toEqual(['CONFIG_B']);
    expect(optionValue(r.finalConfig, 'D')).toBe('y');
    expect(optionValue(r.finalConfig, 'C')).toBe('n');
    const md = reportMarkdown(r.state);
    expect(md).toContain('| 1 | B | **removed** | C y→n |');
    expect(md).toContain('| 3 | D | kept (no D: boot failed)');
    expect(JSON.parse(reportJson(r.state))).toMatchObject({ finalConfigHash: configHash(r.finalConfig), candidates: ['CONFIG_B', 'CONFIG_C', 'CONFIG_D', 'CONFIG_E', 'CONFIG_G'] });
  });

  it('retries options that were forced on once what selected them is gone (pass 2)', async () => {
    const h = harness({});
    const r = await minimizeKernel({
      cacheDir: h.dir, start: { kind: 'config', text: START }, testId: 't', candidates: ['E', 'F'],
      resolve: h.resolve, build: h.build, test: h.test,
    });
    expect(r.state.steps.map((s) => [s.option, s.pass, s.status])).toEqual([
      ['CONFIG_E', 1, 'forced-on'],
      ['CONFIG_F', 1, 'removed'],
      ['CONFIG_E', 2, 'removed'],
    ]);
    expect(r.removed).toEqual(['CONFIG_F', 'CONFIG_E']);
    expect(reportMarkdown(r.state)).toContain('| 3 | E (pass 2) | **removed**');
  });

  it('turns an option back on when the kernel without it does not build', async () => {
    const h = harness({ brokenBuild: ['CONFIG_A'] });
    const r = await minimizeKernel({
      cacheDir: h.dir, start: { kind: 'config', text: START }, testId: 't', candidates: ['A', 'F'],
      resolve: h.resolve, build: h.build, test: h.test,
    });
    expect(r.state.steps.map((s) => [s.option, s.status])).toEqual([['CONFIG_A', 'build-failed'], ['CONFIG_F', 'removed']]);
    expect(r.state.steps[0]!.detail).toContain('make: error without CONFIG_A');
  });

  it('resumes after a crash without repeating decided steps, and a finished run only rebuilds its result', async () => {
    const h = harness({ crashOn: true });
    const opts = {
      cacheDir: h.dir, start: { kind: 'config' as const, text: START }, testId: 't', candidates: ['A', 'B', 'D', 'F'],
      resolve: h.resolve, build: h.build, test: h.test,
    };
    // baseline = test 1, A = test 2, then the run dies while it prepares B
    await expect(minimizeKernel(opts)).rejects.toThrow(/simulated crash/);
    const statePath = fs.readdirSync(path.join(h.dir, 'tinyx-minimize')).filter((f) => f.endsWith('.json'));
    expect(statePath).toHaveLength(1);
    const saved = JSON.parse(fs.readFileSync(path.join(h.dir, 'tinyx-minimize', statePath[0]!), 'utf8'));
    expect(saved.steps.map((s: { option: string }) => s.option)).toEqual(['CONFIG_A']);
    const testsBefore = h.tests.length;
    const lines: string[] = [];
    const r = await minimizeKernel({ ...opts, onProgress: (l) => lines.push(l) });
    expect(lines[0]).toMatch(/resuming .* \(1\/4 decided\)/);
    expect(h.tests.length - testsBefore).toBe(3); // B, D, F: not the baseline, not A
    expect(r.removed).toEqual(['CONFIG_A', 'CONFIG_B', 'CONFIG_D', 'CONFIG_F']);
    expect(lines.some((l) => /ETA ~\d/.test(l))).toBe(true);
    const again = h.tests.length;
    await minimizeKernel(opts);
    expect(h.tests.length).toBe(again);
  });

  it('refuses a start config that fails its own test', async () => {
    const h = harness({});
    await expect(
      minimizeKernel({
        cacheDir: h.dir, start: { kind: 'config', text: START }, testId: 't', candidates: ['A'],
        resolve: h.resolve, build: h.build, test: async () => ({ ok: false, detail: 'never boots' }),
      }),
    ).rejects.toThrow(/start config fails the test.*never boots/);
  });
});

