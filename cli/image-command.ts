/**
 * `mayfly image ...`:
 *   build [--kernel debian|tinyx] [--compression lz4|gzip|zstd|none]
 *   kernel [--config FILE | --base]                     build (or find) a tinyx kernel
 *   minimize-kernel --candidates a,b,c | --candidates-file F [--config FILE | --base]
 *                   [--out FILE] [--report PREFIX] [--state FILE] [--fresh] [--boot-timeout MS]
 *   deps RECIPE | --binary PATH                          dependency discovery of a runtime
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../contracts/config.js';
import { ensureImage, formatImageReport, type Compression, type KernelChoice } from '../functions/image/build.js';
import {
  baseTinyxConfig,
  buildKernel,
  defaultTinyxConfig,
  formatKernelProgress,
  SHIPPED_CONFIG,
  type KernelConfigInput,
} from '../functions/image/kernel-build.js';
import { minimizeKernel, parseCandidates, reportJson, reportMarkdown } from '../functions/image/kernel-minimize.js';
import { INVOCATION_TEST_ID, invocationTest } from '../functions/image/kernel-test.js';
import { discoverRuntime, formatRuntimeFiles, recipeFor, RUNTIME_RECIPES, staticBinaryRecipe } from '../functions/image/runtime-deps.js';
import { ensureConfiguredImage } from '../functions/image/image-options.js';
import { printProgress } from './progress.js';

export const IMAGE_USAGE = `usage:
  mayfly image build [--kernel auto|debian|tinyx] [--compression lz4|gzip|zstd|none] [--runtime python3|binary:/PATH ...]
      Build (or find in the cache) the node guest image; default kernel MAYFLY_GUEST_KERNEL,
      extra runtimes MAYFLY_IMAGE_RUNTIMES (each --runtime adds one and replaces that default).
  mayfly image kernel [--config FILE | --base]
      Build (or find) a tinyx kernel: the shipped infra/kernel/tinyx-microvm.config by default,
      --base for tinyconfig + infra/kernel/tinyx-microvm.fragment, --config for any full config.
  mayfly image minimize-kernel (--candidates A,B,C | --candidates-file FILE) [--config FILE | --base]
                               [--out FILE] [--report PREFIX] [--state FILE] [--fresh] [--boot-timeout MS]
      Option elimination: turn each candidate off, rebuild, boot the node image on it and run
      a function; keep it off when that works. Resumable (state in the cache). Start config
      default --base; writes the result to --out (default infra/kernel/tinyx-microvm.config)
      and PREFIX.md / PREFIX.json (default infra/kernel/tinyx-microvm.report).
  mayfly image deps (node|python3 | --binary PATH)
      Dependency discovery: ELF closure + files opened at start-up (strace).
`;

function configInput(values: { config?: string | undefined; base?: boolean | undefined }, fallback: KernelConfigInput): KernelConfigInput {
  if (values.config && values.base) throw new Error('--config and --base exclude each other');
  if (values.config) return { kind: 'config', path: path.resolve(values.config) };
  if (values.base) return baseTinyxConfig();
  return fallback;
}

const kernelLine = (p: { step: string; detail?: string }) => process.stderr.write(`mayfly ${formatKernelProgress(p)}\n`);

export async function imageCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'build':
      return buildCmd(rest);
    case 'kernel':
      return kernelCmd(rest);
    case 'minimize-kernel':
      return minimizeCmd(rest);
    case 'deps':
      return depsCmd(rest);
    default:
      process.stderr.write(IMAGE_USAGE);
      return 2;
  }
}

async function buildCmd(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { kernel: { type: 'string' }, compression: { type: 'string' }, runtime: { type: 'string', multiple: true } } });
  const config = loadConfig();
  const kernel = values.kernel ?? config.MAYFLY_GUEST_KERNEL;
  if (kernel !== 'debian' && kernel !== 'tinyx' && kernel !== 'auto') throw new Error('--kernel must be auto, debian or tinyx');
  const compression = (values.compression ?? config.MAYFLY_IMAGE_COMPRESSION) as Compression;
  const runtimes = values.runtime ?? config.MAYFLY_IMAGE_RUNTIMES;
  for (const r of runtimes) recipeFor(r); // a clear error before any work
  const t0 = performance.now();
  const image = await ensureConfiguredImage(config, { kernel, compression, runtimes, onProgress: printProgress });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  process.stdout.write(`${formatImageReport(image)}\n${image.builtNow ? `built in ${secs} s` : `from the cache (${secs} s)`}\n`);
  return 0;
}

async function kernelCmd(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string' }, base: { type: 'boolean' } } });
  const config = loadConfig();
  const input = configInput(values, defaultTinyxConfig(config.MAYFLY_TINYX_CONFIG));
  const k = await buildKernel({ cacheDir: config.MAYFLY_CACHE_DIR, config: input, onProgress: kernelLine });
  process.stdout.write(
    [
      `kernel ${k.id} (${k.cached ? 'cached' : 'built now'}, ${(k.elapsedMs / 1000).toFixed(1)} s)`,
      `  release  ${k.release}`,
      `  vmlinux  ${(k.vmlinuxBytes / 1048576).toFixed(2)} MiB file, ${(k.loadBytes / 1048576).toFixed(2)} MiB loaded  ${k.vmlinuxPath}`,
      `  config   ${k.configHash.slice(0, 16)}  ${k.configPath}`,
      `  needs    ${[...k.machineOptions.map((o) => `-M microvm,${o}`), ...k.bootArgs].join(' ') || '(nothing special)'}`,
    ].join('\n') + '\n',
  );
  return 0;
}

async function minimizeCmd(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      candidates: { type: 'string' },
      'candidates-file': { type: 'string' },
      config: { type: 'string' },
      base: { type: 'boolean' },
      out: { type: 'string' },
      report: { type: 'string' },
      state: { type: 'string' },
      fresh: { type: 'boolean' },
      'boot-timeout': { type: 'string' },
    },
  });
  const candidates = [
    ...(values.candidates ? parseCandidates(values.candidates) : []),
    ...(values['candidates-file'] ? parseCandidates(await readFile(values['candidates-file'], 'utf8')) : []),
  ];
  if (candidates.length === 0) throw new Error('give --candidates A,B,C or --candidates-file FILE');
  const config = loadConfig();
  const start = configInput(values, baseTinyxConfig());
  const bootTimeoutMs = values['boot-timeout'] ? Number(values['boot-timeout']) : 60_000;
  const out = path.resolve(values.out ?? SHIPPED_CONFIG);
  const reportPrefix = path.resolve(values.report ?? out.replace(/\.config$/, '') + '.report');
  const r = await minimizeKernel({
    cacheDir: config.MAYFLY_CACHE_DIR,
    start,
    candidates,
    testId: INVOCATION_TEST_ID,
    test: invocationTest({ config, bootTimeoutMs, onProgress: (l) => process.stderr.write(`mayfly ${l}\n`) }),
    ...(values.state ? { statePath: path.resolve(values.state) } : {}),
    ...(values.fresh ? { fresh: true } : {}),
    onProgress: (line) => process.stderr.write(`mayfly ${line}\n`),
  });
  const header =
    `# Tinyx minimized kernel config for QEMU microvm (written by \`mayfly image minimize-kernel\`).\n` +
    `# Source ${r.finalKernel.sourcePackage} ${r.finalKernel.sourceVersion}, release ${r.finalKernel.release}, config ${r.finalKernel.configHash.slice(0, 16)}.\n` +
    `# Removed: ${r.removed.map((o) => o.replace(/^CONFIG_/, '')).join(' ') || '(none)'}. Report: ${path.basename(reportPrefix)}.md\n`;
  await writeFile(out, header + r.finalConfig);
  await writeFile(`${reportPrefix}.md`, reportMarkdown(r.state));
  await writeFile(`${reportPrefix}.json`, reportJson(r.state));
  process.stdout.write(
    `removed ${r.removed.length}/${candidates.length}: ${r.removed.join(' ') || '(none)'}\n` +
      `config  ${out}\nreport  ${reportPrefix}.md, ${reportPrefix}.json\nstate   ${r.statePath}\n` +
      `vmlinux ${(r.finalKernel.vmlinuxBytes / 1048576).toFixed(2)} MiB (start ${((r.state.baseline?.vmlinuxBytes ?? 0) / 1048576).toFixed(2)} MiB)\n`,
  );
  return 0;
}

async function depsCmd(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { binary: { type: 'string' } } });
  const recipe = values.binary ? staticBinaryRecipe(values.binary) : RUNTIME_RECIPES[positionals[0] ?? 'node'];
  if (!recipe) throw new Error(`unknown runtime recipe "${positionals[0]}" (known: ${Object.keys(RUNTIME_RECIPES).join(', ')})`);
  process.stdout.write(formatRuntimeFiles(await discoverRuntime(recipe)) + '\n');
  return 0;
}
