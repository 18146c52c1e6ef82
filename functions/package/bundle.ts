/**
 * esbuild: the package's handler and its dependencies into one ES module for
 * the guest (platform node, Node 20 syntax), with an inline source map
 * (mappings only, no sources) so stack traces in logs and error results name
 * the user's own file and line (the agent turns source maps on for such a
 * module). TypeScript (.ts, .mts, .cts) is compiled by stripping types: a type
 * error is not a deploy error, a syntax error is (SYNTAX_ERROR, file:line).
 * Every file the bundle reads must be inside the package.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { PackageError } from './errors.js';

export const HANDLER_EXTENSIONS = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'];

/** "src/index.handler" → module "src/index", export "handler"; "handler" → the package's main (or "index"). */
export function splitHandler(handler: string, main: string | undefined): { module: string; exportName: string } {
  const dot = handler.lastIndexOf('.');
  if (dot < 0) return { module: main ?? 'index', exportName: handler };
  return { module: handler.slice(0, dot), exportName: handler.slice(dot + 1) };
}

/** The entry file for `module` inside root, or HANDLER_NOT_FOUND listing what was tried. */
export function findEntry(root: string, module: string, handler: string): string {
  const base = module.replace(/^\.\//, '');
  const tried = [base, ...HANDLER_EXTENSIONS.map((e) => base + e), ...HANDLER_EXTENSIONS.map((e) => `${base}/index${e}`)];
  for (const rel of tried) {
    const full = path.resolve(root, rel);
    if (!full.startsWith(root + path.sep)) break;
    if (HANDLER_EXTENSIONS.includes(path.extname(rel)) && fs.existsSync(full) && fs.statSync(full).isFile()) return full;
  }
  const top = fs.readdirSync(root).filter((f) => f !== 'node_modules').slice(0, 20);
  throw new PackageError(
    'HANDLER_NOT_FOUND',
    `handler "${handler}": the package has no file ${base}.ts, .mts, .cts, .js, .mjs or .cjs (its top level holds: ${top.join(', ') || 'nothing'}); name the handler "<file without extension>.<export>", e.g. "src/index.handler"`,
    base,
  );
}

/** Refuses any file outside the package (a symlink out, a parent node_modules). */
function confineTo(root: string, allowed: string[]): esbuild.Plugin {
  return {
    name: 'mayfly-confine',
    setup(build) {
      build.onLoad({ filter: /.*/ }, (args) => {
        if (args.namespace !== 'file' || allowed.includes(args.path)) return undefined;
        let real: string;
        try {
          real = fs.realpathSync(args.path);
        } catch {
          real = args.path;
        }
        if (real !== root && !real.startsWith(root + path.sep)) {
          return { errors: [{ text: `the bundle may only read files inside the package; "${args.path}" is outside it` }] };
        }
        return undefined;
      });
    },
  };
}

const BANNER =
  "import { createRequire as __mayflyCreateRequire } from 'node:module'; const require = __mayflyCreateRequire(import.meta.url);";

export interface BundleResult {
  code: string;
  /** What the agent imports: the export name (the bundle re-exports the handler under it or as default). */
  exportName: string;
  entry: string;
}

/**
 * The bundle's entry: imports the user's module, picks the handler the way the
 * agent does (named export, a property of the default export, or the default
 * function), and re-exports it wrapped so that a thrown error's stack (source
 * mapped: the user's file and line) is also written to the call's logs.
 */
function wrapperSource(entryRel: string, exportName: string): string {
  const spec = JSON.stringify(`./${entryRel.split(path.sep).join('/')}`);
  const name = JSON.stringify(exportName);
  return `import * as __mayflyModule from ${spec};
const __mayflyPick = (m, n) => {
  const d = m.default;
  for (const c of [m[n], d && typeof d === 'object' ? d[n] : undefined, d]) if (typeof c === 'function') return c;
  return null;
};
const __mayflyHandler = __mayflyPick(__mayflyModule, ${name});
if (!__mayflyHandler) throw new TypeError(${JSON.stringify(`${entryRel} exports no function named "${exportName}" and no default function`)});
const __mayflyWrapped = async function (event, context) {
  try {
    return await __mayflyHandler(event, context);
  } catch (err) {
    console.error(err instanceof Error && err.stack ? err.stack : String(err));
    throw err;
  }
};
export { __mayflyWrapped as ${exportName === 'default' ? 'default' : exportName} };
`;
}

/** Syntax errors and the ES module exports of the entry file alone (no bundling: fast). */
async function entryExports(entry: string, root: string): Promise<{ esm: boolean; exports: string[] }> {
  try {
    const r = await esbuild.build({ entryPoints: [entry], absWorkingDir: root, bundle: false, write: false, metafile: true, format: 'esm', platform: 'node', target: 'node20', logLevel: 'silent', outdir: path.join(root, '.mayfly-check') });
    const out = Object.values(r.metafile.outputs)[0];
    const input = Object.values(r.metafile.inputs)[0];
    return { esm: input?.format === 'esm', exports: out?.exports ?? [] };
  } catch (err) {
    throw buildError(err, root);
  }
}

export async function bundle(root: string, workDir: string, handler: string, main: string | undefined, maxBytes: number): Promise<BundleResult> {
  const realRoot = fs.realpathSync(root);
  const { module, exportName } = splitHandler(handler, main);
  const entry = findEntry(realRoot, module, handler);
  const rel = path.relative(realRoot, entry);
  const shape = await entryExports(entry, realRoot);
  if (shape.esm && !shape.exports.includes(exportName) && !shape.exports.includes('default')) {
    throw new PackageError(
      'HANDLER_NOT_FOUND',
      `handler "${handler}": ${rel} exports no "${exportName}" (its exports: ${shape.exports.join(', ') || 'none'}); export the handler, e.g. \`export async function ${exportName}(event, context) {}\``,
      rel,
    );
  }
  // __dirname/__filename for CommonJS dependencies in an ES module bundle (esbuild renames clashes).
  const inject = path.join(workDir, 'mayfly-cjs-globals.mjs');
  fs.writeFileSync(
    inject,
    "import { fileURLToPath } from 'node:url';\nimport { dirname } from 'node:path';\nexport const __filename = fileURLToPath(import.meta.url);\nexport const __dirname = dirname(__filename);\n",
  );
  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  try {
    result = await esbuild.build({
      stdin: { contents: wrapperSource(rel, exportName), resolveDir: realRoot, sourcefile: 'mayfly-entry.mjs', loader: 'js' },
      absWorkingDir: realRoot,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      write: false,
      metafile: true,
      outfile: path.join(realRoot, 'index.mjs'),
      sourcemap: 'inline',
      sourcesContent: false,
      banner: { js: BANNER },
      inject: [inject],
      nodePaths: [],
      logLevel: 'silent',
      legalComments: 'none',
      plugins: [confineTo(realRoot, [inject])],
    });
  } catch (err) {
    throw buildError(err, realRoot);
  }
  const out = result.outputFiles[0]!;
  if (out.contents.byteLength > maxBytes) {
    throw new PackageError('BUNDLE_TOO_LARGE', `the bundled function is ${out.contents.byteLength} bytes, above the limit of ${maxBytes} bytes (MAYFLY_MAX_BUNDLE_BYTES); drop large dependencies`);
  }
  return { code: out.text, exportName, entry: rel };
}

function buildError(err: unknown, root: string): PackageError {
  const failure = err as esbuild.BuildFailure;
  const first = failure.errors?.[0];
  if (!first) return new PackageError('BUILD_FAILED', `bundling failed: ${(err as Error).message}`);
  const loc = first.location;
  const where = loc ? `${path.isAbsolute(loc.file) ? path.relative(root, loc.file) : loc.file}:${loc.line}:${loc.column + 1}` : '';
  const more = failure.errors.length > 1 ? ` (and ${failure.errors.length - 1} more error${failure.errors.length > 2 ? 's' : ''})` : '';
  const text = `${where ? `${where}: ` : ''}${first.text}${loc?.lineText ? ` — ${loc.lineText.trim().slice(0, 200)}` : ''}${more}`;
  const unresolved = /^Could not resolve|No loader is configured|outside it/.test(first.text);
  if (unresolved) {
    const hint = /^Could not resolve "([^"./][^"]*)"/.test(first.text) ? '; add it to package.json dependencies (with package-lock.json)' : '';
    return new PackageError('BUILD_FAILED', `${text}${hint}`, loc?.file);
  }
  return new PackageError('SYNTAX_ERROR', `syntax error: ${text}`, loc?.file);
}
