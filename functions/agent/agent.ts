/**
 * Mayfly guest agent: the VM's init process (the image's /init execs it after
 * loading the console driver). It speaks the guest protocol
 * (contracts/guest-protocol.ts) over one byte channel, fd 3, which /init opened
 * on /dev/hvc0 and put in raw mode. hvc resets its terminal settings when its
 * last handle closes, so that fd stays open for the VM's whole life.
 *
 * It must never exit: as PID 1 its exit would panic the kernel. Every failure
 * of user code becomes a `result` with an error.
 *
 * Only Node built-ins and ../../contracts/frame.js may be imported here: the
 * image builder ships exactly those files into the guest.
 */
import { Console } from 'node:console';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import { encodeFrame, FrameDecoder } from '../../contracts/frame.js';
import { reseedCloneRng } from './clone-rng.js';
import { looksLikeEsm, pickHandler, type Handler } from './handler-module.js';
import { startWatchdog } from './watchdog.js';
import type { WatchdogSpec } from '../../contracts/watchdog.js';
import type {
  ErrorInfo,
  GuestMessage,
  HostMessage,
  InitMessage,
  ReseedMessage,
  RunMessage,
} from '../../contracts/guest-protocol.js';

// Mirrors WARMUP_CALL_ID in contracts/guest-protocol.ts (only types are imported from there).
const WARMUP_CALL_ID = 'mayfly-warmup';
/** The built-in handler of a `warmup`: the shape of a typical handler, touching nothing of the user's. */
const warmupHandler: Handler = async (event) => ({ statusCode: 200, headers: { 'content-type': 'text/plain' }, body: String((event as { body?: unknown }).body ?? '') });

const AGENT_VERSION = '1';
// Mirrors contracts/guest-protocol.ts (not imported: the guest has no zod).
const MAX_FRAME_BYTES = 9 * 1024 * 1024;
const MAX_LOG_LINE_CHARS = 8192;

const channelFd = Number(process.env.MAYFLY_CHANNEL_FD ?? '3');
const taskDir = process.env.MAYFLY_TASK_DIR ?? '/var/task';

let fn: { name: string; handler: Handler; memoryLimitInMB: number } | null = null;
let currentCallId: string | null = null;

// ---- channel ---------------------------------------------------------------

function writeAll(buf: Buffer): void {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(channelFd, buf, off, buf.length - off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      throw err;
    }
  }
}

function send(message: GuestMessage): void {
  writeAll(encodeFrame(message));
}

// ---- console capture -------------------------------------------------------

const partial: Record<'stdout' | 'stderr', string> = { stdout: '', stderr: '' };

function emitLine(stream: 'stdout' | 'stderr', line: string): void {
  const cut = line.length > MAX_LOG_LINE_CHARS ? line.slice(0, MAX_LOG_LINE_CHARS - 1) + '…' : line;
  send({ type: 'log', callId: currentCallId, stream, line: cut });
}

function capture(stream: 'stdout' | 'stderr'): void {
  const target = process[stream];
  target.write = ((chunk: string | Uint8Array, encoding?: unknown, cb?: unknown): boolean => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    const lines = (partial[stream] + text).split('\n');
    partial[stream] = lines.pop() ?? '';
    for (const line of lines) emitLine(stream, line);
    // A line without a newline must not grow without bound.
    if (partial[stream].length >= MAX_LOG_LINE_CHARS) {
      emitLine(stream, partial[stream]);
      partial[stream] = '';
    }
    const done = typeof encoding === 'function' ? encoding : cb;
    if (typeof done === 'function') queueMicrotask(() => (done as () => void)());
    return true;
  }) as typeof target.write;
}

function flushLogs(): void {
  for (const stream of ['stdout', 'stderr'] as const) {
    if (partial[stream] !== '') {
      emitLine(stream, partial[stream]);
      partial[stream] = '';
    }
  }
}

// ---- handlers --------------------------------------------------------------

function errorInfo(err: unknown): ErrorInfo {
  if (err instanceof Error) {
    return {
      name: String(err.name).slice(0, 256),
      message: String(err.message).slice(0, 64 * 1024),
      ...(err.stack ? { stack: String(err.stack).slice(0, 64 * 1024) } : {}),
    };
  }
  return { name: 'Error', message: String(err).slice(0, 64 * 1024) };
}

/** Where a function reads its secrets (the OpenFaaS path), one file per secret. */
const SECRETS_DIR = process.env.MAYFLY_SECRETS_DIR ?? '/var/openfaas/secrets';

async function init(msg: InitMessage): Promise<void> {
  Object.assign(process.env, msg.env);
  if (msg.secrets && Object.keys(msg.secrets).length > 0) {
    fs.mkdirSync(SECRETS_DIR, { recursive: true, mode: 0o700 });
    for (const [name, value] of Object.entries(msg.secrets)) {
      fs.writeFileSync(path.join(SECRETS_DIR, path.basename(name)), value, { mode: 0o400 });
    }
  }
  if (msg.watchdog) {
    // An image function (OpenFaaS's watchdog contract, watchdog.ts): the code is its watchdog spec.
    try {
      const handler = await startWatchdog(JSON.parse(msg.code) as WatchdogSpec, msg.env, SECRETS_DIR);
      fn = { name: msg.functionName, handler, memoryLimitInMB: msg.memoryLimitInMB };
      send({ type: 'initialized', ok: true });
    } catch (err) {
      flushLogs();
      send({ type: 'initialized', ok: false, error: errorInfo(err) });
    }
    return;
  }
  fs.mkdirSync(taskDir, { recursive: true });
  // A bundle built from a package (functions/package/) carries an inline source map: stack traces name the user's file and line.
  if (msg.code.includes('\n//# sourceMappingURL=data:application/json;base64,')) process.setSourceMapsEnabled(true);
  const file = path.join(taskDir, looksLikeEsm(msg.code) ? 'index.mjs' : 'index.cjs');
  fs.writeFileSync(file, msg.code);
  // Lambda style "index.handler" names the export after the last dot.
  const exportName = msg.handler.includes('.') ? msg.handler.slice(msg.handler.lastIndexOf('.') + 1) : msg.handler;
  try {
    if (msg.eager) v8.setFlagsFromString('--no-lazy');
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    } finally {
      if (msg.eager) v8.setFlagsFromString('--lazy');
    }
    const handler = pickHandler(mod, exportName);
    if (!handler) throw new TypeError(`the module exports no function named "${exportName}" and no default function`);
    fn = { name: msg.functionName, handler, memoryLimitInMB: msg.memoryLimitInMB };
    send({ type: 'initialized', ok: true });
  } catch (err) {
    flushLogs();
    send({ type: 'initialized', ok: false, error: errorInfo(err) });
  }
}

let settle: ((outcome: { ok: true; value: unknown } | { ok: false; error: unknown }) => void) | null = null;

async function run(msg: RunMessage, builtin?: Handler): Promise<void> {
  if ((!fn && !builtin) || currentCallId !== null) {
    const why = !fn ? 'the function is not initialized' : 'another invocation is running in this VM';
    send({ type: 'result', callId: msg.callId, ok: false, error: { name: 'AgentError', message: why } });
    return;
  }
  const current = builtin ? { name: 'mayfly-warmup', handler: builtin, memoryLimitInMB: fn?.memoryLimitInMB ?? 128 } : fn!;
  currentCallId = msg.callId;
  const deadline = Date.now() + msg.timeoutMs;
  const context = {
    functionName: current.name,
    callId: msg.callId,
    deadline,
    memoryLimitInMB: current.memoryLimitInMB,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  const outcome = await new Promise<{ ok: true; value: unknown } | { ok: false; error: unknown }>((resolve) => {
    settle = resolve;
    Promise.resolve()
      .then(() => current.handler(msg.event, context))
      .then(
        (value) => resolve({ ok: true, value }),
        (error: unknown) => resolve({ ok: false, error }),
      );
  });
  settle = null;
  flushLogs();
  let frame: Buffer;
  if (outcome.ok) {
    try {
      frame = encodeFrame(
        outcome.value === undefined
          ? { type: 'result', callId: msg.callId, ok: true }
          : { type: 'result', callId: msg.callId, ok: true, value: outcome.value },
      );
      if (frame.length > MAX_FRAME_BYTES) {
        throw new RangeError(`the result is ${frame.length} bytes, above the limit of ${MAX_FRAME_BYTES}`);
      }
    } catch (err) {
      frame = encodeFrame({ type: 'result', callId: msg.callId, ok: false, error: errorInfo(err) });
    }
  } else {
    frame = encodeFrame({ type: 'result', callId: msg.callId, ok: false, error: errorInfo(outcome.error) });
  }
  currentCallId = null;
  writeAll(frame);
}

/** First message to a clone (and a warm-up in its template): fresh randomness, then a new `ready` (see clone-rng.ts). */
function reseed(msg: ReseedMessage): void {
  reseedCloneRng(Buffer.from(msg.entropy, 'base64'));
  sendReady();
}

function sendReady(): void {
  send({
    type: 'ready',
    runtime: 'node',
    runtimeVersion: process.version,
    kernel: os.release(),
    agentVersion: AGENT_VERSION,
  });
}

function onMessage(raw: unknown): void {
  const msg = raw as HostMessage;
  if (msg?.type === 'reseed') reseed(msg);
  else if (msg?.type === 'init') void init(msg);
  else if (msg?.type === 'run') void run(msg);
  else if (msg?.type === 'warmup') {
    const event = { method: 'POST', path: '/', query: {}, headers: { 'content-type': 'text/plain' }, body: 'warmup', isBase64Encoded: false };
    void run({ type: 'run', callId: WARMUP_CALL_ID, event, timeoutMs: 10_000 }, warmupHandler);
  }
  else process.stderr.write(`agent: ignoring unknown host message\n`);
}

// ---- main ------------------------------------------------------------------

function main(): void {
  capture('stdout');
  capture('stderr');
  // The guest's stdout is a terminal (the kernel console): without this, console.log would add colour codes.
  globalThis.console = new Console({ stdout: process.stdout, stderr: process.stderr, colorMode: false });
  // As PID 1, exiting would panic the guest kernel: turn it into an error.
  process.exit = ((code?: number) => {
    throw new Error(`process.exit(${code ?? ''}) is not allowed in a Mayfly function; return a value instead`);
  }) as typeof process.exit;
  // An error escaping the handler's promise chain fails the current call only.
  const fault = (err: unknown) => {
    if (settle) settle({ ok: false, error: err });
    else process.stderr.write(`agent: uncaught error outside an invocation: ${errorInfo(err).message}\n`);
  };
  process.on('uncaughtException', fault);
  process.on('unhandledRejection', fault);

  const decoder = new FrameDecoder(MAX_FRAME_BYTES);
  const input = fs.createReadStream('', { fd: channelFd, autoClose: false, highWaterMark: 1 << 16 });
  input.on('data', (chunk) => {
    for (const m of decoder.push(chunk as Buffer)) onMessage(m);
  });
  input.on('error', (err) => process.stderr.write(`agent: channel read failed: ${err.message}\n`));
  sendReady();
}

main();
