/**
 * Host baselines served over HTTP like Mayfly's gateway (`POST /function/<name>`),
 * run as their own process by the benchmarks:
 *
 *   node baseline-server.js http <dir>       every <dir>/<name>.mjs handler loaded once, called
 *                                            in this process (a plain Node `http` server)
 *   node baseline-server.js watchdog <dir>   one `node baseline-runner.js <dir>/<name>.mjs`
 *                                            process per request, event on stdin, value on
 *                                            stdout (OpenFaaS classic watchdog's fork/exec)
 *
 * Prints `listening <port>` once ready; SIGTERM/SIGINT end it.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

type Handler = (event: unknown, context: unknown) => unknown;

const RUNNER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'baseline-runner.js');
const [mode, dir] = process.argv.slice(2);
if ((mode !== 'http' && mode !== 'watchdog') || !dir) {
  process.stderr.write('usage: baseline-server.js http|watchdog <handlers dir>\n');
  process.exit(2);
}

const files = new Map<string, string>();
const handlers = new Map<string, Handler>();
for (const f of fs.readdirSync(dir)) {
  if (!f.endsWith('.mjs')) continue;
  const name = f.slice(0, -4);
  files.set(name, path.join(dir, f));
  if (mode === 'http') {
    const mod = (await import(pathToFileURL(path.join(dir, f)).href)) as Record<string, unknown>;
    handlers.set(name, (mod.handler ?? mod.default) as Handler);
  }
}

function runProcess(file: string, event: unknown): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUNNER, file], { stdio: ['pipe', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.on('error', () => resolve({ ok: false, out: '' }));
    child.on('close', (code) => resolve({ ok: code === 0, out: Buffer.concat(out).toString('utf8') }));
    child.stdin.end(JSON.stringify(event));
  });
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const m = /^\/function\/([a-z0-9-]+)(\/.*)?$/.exec(url.pathname);
      const name = m?.[1];
      if (!name || !files.has(name)) {
        res.writeHead(404).end('{"error":"no such function"}');
        return;
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
      const event = {
        method: req.method ?? 'GET',
        path: m[2] ?? '/',
        query: Object.fromEntries(url.searchParams),
        headers,
        body: Buffer.concat(chunks).toString('utf8'),
        isBase64Encoded: false,
      };
      try {
        let body: string;
        if (mode === 'http') {
          const deadline = Date.now() + 30_000;
          const value = await handlers.get(name)!(event, {
            functionName: name,
            callId: 'baseline',
            deadline,
            memoryLimitInMB: 128,
            getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
          });
          body = value === undefined ? '' : JSON.stringify(value);
        } else {
          const r = await runProcess(files.get(name)!, event);
          if (!r.ok) throw new Error('handler process failed');
          body = r.out;
        }
        res.writeHead(body ? 200 : 204, { 'content-type': 'application/json' }).end(body);
      } catch (err) {
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: (err as Error).message }));
      }
    })();
  });
});
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.stdout.write(`listening ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
});
const stop = () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
