/**
 * Builds the console's browser code (gateway/console/web, TypeScript + CSS,
 * with uPlot for the charts) into dist/gateway/console/public/app.{js,css}
 * with esbuild. Part of `npm run build`; nothing is fetched at run time.
 */
import path from 'node:path';
import { build } from 'esbuild';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { ASSETS_DIR } from './assets.js';

await build({
  entryPoints: { app: path.join(PROJECT_ROOT, 'gateway', 'console', 'web', 'main.ts') },
  bundle: true,
  format: 'esm',
  target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: true,
  outdir: ASSETS_DIR,
  logLevel: 'warning',
  legalComments: 'eof',
});
