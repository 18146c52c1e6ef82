/**
 * What `mayfly deploy` sends for a path: a JavaScript file as `code`; a
 * TypeScript file, or a folder, as `package` (a .tar.gz made here, without
 * node_modules and .git: the platform installs dependencies itself).
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tar from 'tar';
import { usageError } from './errors.js';

export interface Source {
  code?: string;
  package?: string;
  /** Default handler name for this source when none is given. */
  handler: string;
  description: string;
}

const SKIP = new Set(['node_modules', '.git', '.DS_Store']);

async function tarGz(cwd: string, entries: string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stream = tar.create(
    { gzip: true, cwd, portable: true, filter: (p: string) => !p.split('/').some((s) => SKIP.has(s)) },
    entries,
  );
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function readSource(p: string): Promise<Source> {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    throw usageError(`${p}: no such file or folder`);
  }
  if (st.isDirectory()) {
    const entries = fs.readdirSync(p).filter((e) => !SKIP.has(e));
    const archive = await tarGz(p, entries);
    return { package: archive.toString('base64'), handler: 'handler', description: `folder ${p} (${archive.length} bytes packed)` };
  }
  const ext = path.extname(p);
  if (['.ts', '.mts', '.cts'].includes(ext)) {
    const archive = await tarGz(path.dirname(p), [path.basename(p)]);
    return { package: archive.toString('base64'), handler: `${path.basename(p, ext)}.handler`, description: `TypeScript file ${p}` };
  }
  if (!['.js', '.mjs', '.cjs'].includes(ext)) {
    throw usageError(`${p}: deploy a .js/.mjs/.cjs or .ts/.mts/.cts file, or a folder with package.json`);
  }
  return { code: fs.readFileSync(p, 'utf8'), handler: 'handler', description: `file ${p}` };
}
