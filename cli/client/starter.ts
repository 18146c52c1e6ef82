/** `mayfly new NAME --lang js|ts`: a starter function folder with a test and a stack file. */
import fs from 'node:fs';
import path from 'node:path';
import { usageError } from './errors.js';

const JS_HANDLER = `export async function handler(event, context) {
  const name = event.body || 'world';
  console.log('hello called with', name);
  return { hello: name, from: context?.functionName };
}
`;

const TS_HANDLER = `interface Event {
  body: string;
  query?: Record<string, string>;
}

export async function handler(event: Event, context?: { functionName: string }): Promise<{ hello: string; from?: string }> {
  const name = event.body || 'world';
  console.log('hello called with', name);
  return { hello: name, from: context?.functionName };
}
`;

const JS_TEST = `import { test } from 'node:test';
import assert from 'node:assert/strict';
import { handler } from '../src/index.js';

test('greets the body', async () => {
  assert.deepEqual(await handler({ body: 'mayfly' }, { functionName: 'NAME' }), { hello: 'mayfly', from: 'NAME' });
});
`;

export function createStarter(name: string, lang: 'js' | 'ts', parent: string): string[] {
  const dir = path.join(parent, name);
  if (fs.existsSync(dir)) throw usageError(`${dir} already exists; pick another name or folder`);
  const ext = lang === 'ts' ? 'ts' : 'js';
  const pkg: Record<string, unknown> = {
    name,
    version: '1.0.0',
    private: true,
    type: 'module',
    scripts: lang === 'ts' ? { test: 'tsx --test test/*.test.ts' } : { test: 'node --test test/' },
    // TypeScript tests run with tsx (npm install first); dev dependencies are never installed at deploy.
    ...(lang === 'ts' ? { devDependencies: { tsx: '^4.19.0', typescript: '^5.6.0' } } : {}),
  };
  const files: Record<string, string> = {
    'package.json': JSON.stringify(pkg, null, 2) + '\n',
    [`src/index.${ext}`]: lang === 'ts' ? TS_HANDLER : JS_HANDLER,
    [`test/index.test.${lang === 'ts' ? 'ts' : 'js'}`]: JS_TEST.replaceAll('NAME', name).replace("'../src/index.js'", lang === 'ts' ? "'../src/index.ts'" : "'../src/index.js'"),
    'mayfly.yml': `version: 1.0\nprovider:\n  name: mayfly\n  gateway: http://127.0.0.1:8080\nfunctions:\n  ${name}:\n    lang: ${lang === 'ts' ? 'typescript' : 'node'}\n    handler: .\n    entrypoint: src/index.handler\n`,
    '.gitignore': 'node_modules/\n',
  };
  const written: string[] = [];
  for (const [rel, content] of Object.entries(files)) {
    const full = path.join(dir, rel);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    fs.writeFileSync(full, content);
    written.push(path.join(name, rel));
  }
  return written;
}
