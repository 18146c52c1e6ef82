// After `npm run build` (and so after `npm ci` / `npm install`, through `prepare`):
// makes the built `mayfly` command executable and links it into node_modules/.bin,
// so `npx mayfly` works in this checkout (npm does not link a project's own bin).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'dist', 'cli', 'mayfly.js');
if (!fs.existsSync(bin)) {
  console.error(`link-bin: ${bin} is missing; run npm run build`);
  process.exit(1);
}
fs.chmodSync(bin, 0o755);
const dotBin = path.join(root, 'node_modules', '.bin');
if (fs.existsSync(path.join(root, 'node_modules'))) {
  fs.mkdirSync(dotBin, { recursive: true });
  const link = path.join(dotBin, 'mayfly');
  fs.rmSync(link, { force: true });
  fs.symlinkSync(path.relative(dotBin, bin), link);
}
