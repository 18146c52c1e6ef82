/**
 * OpenFaaS's watchdog contract inside the VM, for image functions: the agent
 * plays the watchdog. The image's root filesystem is at /rootfs (joined to
 * the initramfs by the worker); its process runs chrooted there (busybox
 * `chroot`, from Mayfly's own /bin/busybox), as root, with the guest's /dev,
 * /proc, /tmp and the function's secrets (/var/openfaas/secrets) bound in.
 *
 *  - classic (the classic watchdog's fprocess): one process per call, the body
 *    on stdin, the response on stdout; `Http_Method`, `Http_Path`, `Http_Query`,
 *    `Http_ContentType` and `Http_<Header_Name>` per request header in its
 *    environment, with the image's env and the deploy's env vars; stderr goes
 *    to the call's logs; a non-zero exit is a 500.
 *  - http (of-watchdog's mode=http): the process is a server started once at
 *    init; each call is forwarded to `upstreamUrl` on the guest's own loopback
 *    (the guest still has no network device).
 *
 * Responses carry X-Call-Id and X-Start-Time, as OpenFaaS's do. Node built-ins
 * only (shipped into the guest with the agent).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { WatchdogSpec } from '../../contracts/watchdog.js';
import type { Handler } from './handler-module.js';

const ROOTFS = process.env.MAYFLY_ROOTFS ?? '/rootfs';
const BUSYBOX = '/bin/busybox';
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** stdout of one call, at most: the result frame must stay under the guest protocol's 9 MiB after base64. */
const MAX_OUTPUT_BYTES = 6 * 1024 * 1024;

interface Event {
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  headers: Record<string, string>;
  body: string;
  isBase64Encoded: boolean;
}
interface Context {
  callId: string;
  deadline: number;
}

/** Go's canonical header form, as the watchdog sees it: content-type → Content-Type. */
function canonical(h: string): string {
  return h
    .split('-')
    .map((p) => (p ? p[0]!.toUpperCase() + p.slice(1).toLowerCase() : p))
    .join('-');
}

export function rawQuery(q: Event['query']): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) for (const x of Array.isArray(v) ? v : [v]) sp.append(k, x);
  return sp.toString();
}

/** The classic watchdog's per-request environment. */
export function requestEnv(event: Event): Record<string, string> {
  const env: Record<string, string> = {
    Http_Method: event.method,
    Http_Path: event.path,
    Http_Query: rawQuery(event.query),
  };
  for (const [k, v] of Object.entries(event.headers)) env[`Http_${canonical(k).replace(/-/g, '_')}`] = v;
  const ct = Object.entries(event.headers).find(([k]) => k.toLowerCase() === 'content-type')?.[1];
  if (ct) env.Http_ContentType = ct;
  return env;
}

function bodyBytes(event: Event): Buffer {
  return event.isBase64Encoded ? Buffer.from(event.body, 'base64') : Buffer.from(event.body, 'utf8');
}

/** Text as a string, anything else base64 (the response mapping decodes it). */
function encodeBody(buf: Buffer): { body: string; isBase64Encoded: boolean } {
  try {
    return { body: new TextDecoder('utf-8', { fatal: true }).decode(buf), isBase64Encoded: false };
  } catch {
    return { body: buf.toString('base64'), isBase64Encoded: true };
  }
}

function startTime(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

/** argv under chroot, in the image's working directory (busybox chroot itself always starts in /). */
function chrootArgs(spec: WatchdogSpec): string[] {
  if (spec.workdir === '/' || spec.workdir === '') return ['chroot', ROOTFS, ...spec.process];
  return ['chroot', ROOTFS, '/bin/sh', '-c', 'cd "$0" && exec "$@"', spec.workdir, ...spec.process];
}

/** Binds the guest's /dev, /proc, /tmp and the secrets into the image's root (once, at init). */
function prepareRoot(secretsDir: string): void {
  for (const d of ['dev', 'proc', 'tmp']) {
    fs.mkdirSync(`${ROOTFS}/${d}`, { recursive: true });
    execFileSync(BUSYBOX, ['mount', '--bind', `/${d}`, `${ROOTFS}/${d}`]);
  }
  if (fs.existsSync(secretsDir)) {
    fs.mkdirSync(`${ROOTFS}${secretsDir}`, { recursive: true });
    execFileSync(BUSYBOX, ['mount', '--bind', secretsDir, `${ROOTFS}${secretsDir}`]);
  }
}

function linesTo(stream: NodeJS.ReadableStream, write: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop() ?? '';
    for (const p of parts) write(p);
  });
  stream.on('end', () => {
    if (rest) write(rest);
  });
}

function classicHandler(spec: WatchdogSpec, baseEnv: Record<string, string>): Handler {
  return (rawEvent, rawContext) =>
    new Promise((resolve, reject) => {
      const event = rawEvent as Event;
      const context = rawContext as Context;
      const started = startTime();
      let child: ChildProcess;
      try {
        child = spawn(BUSYBOX, chrootArgs(spec), { env: { ...baseEnv, ...requestEnv(event) }, stdio: ['pipe', 'pipe', 'pipe'] });
      } catch (err) {
        reject(err);
        return;
      }
      const out: Buffer[] = [];
      let outBytes = 0;
      let tooBig = false;
      const stderrTail: string[] = [];
      child.stdout!.on('data', (c: Buffer) => {
        outBytes += c.length;
        if (outBytes > MAX_OUTPUT_BYTES) {
          if (!tooBig) child.kill('SIGKILL');
          tooBig = true;
          return;
        }
        out.push(c);
      });
      linesTo(child.stderr!, (line) => {
        process.stderr.write(`${line}\n`);
        stderrTail.push(line);
        if (stderrTail.length > 20) stderrTail.shift();
      });
      // The host ends the VM at the deadline; end the process a little before, so the call gets its 500.
      const timer = setTimeout(() => child.kill('SIGKILL'), Math.max(0, context.deadline - Date.now() - 100));
      child.stdin!.on('error', () => {}); // a process that does not read its stdin
      child.stdin!.end(bodyBytes(event));
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not start "${spec.process.join(' ')}": ${err.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const headers: Record<string, string> = {
          'content-type': spec.contentType ?? event.headers['content-type'] ?? 'text/plain',
          'x-call-id': context.callId,
          'x-start-time': started,
        };
        if (tooBig) {
          resolve({ statusCode: 500, headers: { ...headers, 'content-type': 'text/plain' }, body: `the function wrote more than ${MAX_OUTPUT_BYTES} bytes to stdout` });
          return;
        }
        if (code !== 0) {
          const why = signal ? `signal: ${signal === 'SIGKILL' && Date.now() >= context.deadline - 150 ? 'killed (timeout)' : signal}` : `exit status ${code}`;
          const tail = stderrTail.length ? `${stderrTail.join('\n')}\n` : '';
          resolve({ statusCode: 500, headers: { ...headers, 'content-type': 'text/plain' }, body: `${tail}${why}` });
          return;
        }
        resolve({ statusCode: 200, headers, ...encodeBody(Buffer.concat(out)) });
      });
    });
}

async function waitForUpstream(url: URL, child: ChildProcess, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the function's server exited (status ${child.exitCode}) before it listened on ${url.host}`);
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.request({ host: url.hostname, port: url.port || 80, path: '/', method: 'HEAD', timeout: 1000 }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`the function's server did not listen on ${url.host} within ${ms} ms (upstream_url)`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function httpHandler(spec: WatchdogSpec, url: URL): Handler {
  return (rawEvent, rawContext) =>
    new Promise((resolve, reject) => {
      const event = rawEvent as Event;
      const context = rawContext as Context;
      const started = startTime();
      const q = rawQuery(event.query);
      const headers = { ...event.headers };
      delete headers['content-length'];
      delete headers['transfer-encoding'];
      const body = bodyBytes(event);
      const req = http.request(
        {
          host: url.hostname,
          port: url.port || 80,
          method: event.method,
          path: `${url.pathname.replace(/\/$/, '')}${event.path || '/'}${q ? `?${q}` : ''}`,
          headers: { ...headers, 'content-length': String(body.length) },
          timeout: Math.max(1, context.deadline - Date.now()),
          // As lenient as of-watchdog's Go client (LF-only header lines, as CGI servers write them): it is the
          // function's own server in its own VM, one connection per call.
          insecureHTTPParser: true,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let n = 0;
          res.on('data', (c: Buffer) => {
            n += c.length;
            if (n > MAX_OUTPUT_BYTES) {
              res.destroy(new Error(`the function's response is larger than ${MAX_OUTPUT_BYTES} bytes`));
              return;
            }
            chunks.push(c);
          });
          res.on('error', reject);
          res.on('end', () => {
            const out: Record<string, string> = {};
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined && k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection') out[k] = Array.isArray(v) ? v.join(', ') : v;
            resolve({ statusCode: res.statusCode ?? 502, headers: { ...out, 'x-call-id': context.callId, 'x-start-time': started }, ...encodeBody(Buffer.concat(chunks)) });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('the function did not answer before its deadline')));
      req.on('error', (err) => reject(new Error(`forwarding to the function's server at ${url.host} failed: ${err.message}`)));
      req.end(body);
    });
}

/**
 * Prepares the image's root and returns the handler the agent runs per call.
 * `deployEnv` is the deploy's envVars (they win over the image's env).
 */
export async function startWatchdog(spec: WatchdogSpec, deployEnv: Record<string, string>, secretsDir: string): Promise<Handler> {
  if (!fs.existsSync(ROOTFS)) throw new Error(`${ROOTFS} is missing: this VM was not booted with the image's root filesystem`);
  prepareRoot(secretsDir);
  const baseEnv: Record<string, string> = { PATH: DEFAULT_PATH, HOME: '/root', ...spec.env, ...deployEnv };
  if (spec.mode === 'classic') return classicHandler(spec, baseEnv);
  const url = new URL(spec.upstreamUrl ?? 'http://127.0.0.1:8082');
  // A kernel built without IPv4 (the tinyx kernel: CONFIG_INET off) has no TCP loopback to forward to.
  if (!fs.existsSync('/proc/net/tcp')) {
    throw new Error('mode=http forwards calls over TCP on the guest loopback, and this guest kernel has no IPv4 (CONFIG_INET): run image functions in http mode with MAYFLY_GUEST_KERNEL=debian, or use the classic fprocess mode');
  }
  // The guest's loopback (no other interface exists): up, for the server and the forwarder.
  try {
    execFileSync(BUSYBOX, ['ip', 'link', 'set', 'lo', 'up']);
  } catch {
    execFileSync(BUSYBOX, ['ifconfig', 'lo', '127.0.0.1', 'up']);
  }
  const child = spawn(BUSYBOX, chrootArgs(spec), { env: baseEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  linesTo(child.stdout!, (line) => process.stdout.write(`${line}\n`));
  linesTo(child.stderr!, (line) => process.stderr.write(`${line}\n`));
  child.on('error', () => {});
  await waitForUpstream(url, child, 20_000);
  return httpHandler(spec, url);
}
