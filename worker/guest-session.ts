/**
 * One VM's conversation with its guest agent: wait for `ready`, `init` the
 * function once, then `run` invocations one at a time. The host enforces every
 * limit itself: boot and init timeouts, the invocation deadline (the VM is
 * destroyed when it passes), log volume per invocation, and any protocol
 * violation (GuestChannel) — each ends the VM and fails the pending operation
 * with a coded InvocationError. A guest can never block or crash the worker.
 */
import { WARMUP_CALL_ID, type ErrorInfo, type GuestMessage, type HostMessage, type InvocationEvent } from '../contracts/guest-protocol.js';
import type { HypervisorDriver, Vm } from './driver/types.js';
import { GuestChannel, GuestFault, type GuestFaultCode } from './guest-channel.js';

export interface SessionLimits {
  bootTimeoutMs: number;
  initTimeoutMs: number;
  /** Log bytes (UTF-8 of the lines) one invocation may produce; more ends the VM. */
  maxLogBytesPerCall: number;
  maxLogLinesPerCall: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  bootTimeoutMs: 60_000,
  initTimeoutMs: 30_000,
  maxLogBytesPerCall: 1024 * 1024,
  maxLogLinesPerCall: 10_000,
};

export interface LogLine {
  stream: 'stdout' | 'stderr';
  line: string;
}

export type InvocationErrorCode =
  | GuestFaultCode
  | 'BOOT_TIMEOUT'
  | 'INIT_TIMEOUT'
  | 'INIT_FAILED'
  | 'FUNCTION_TIMEOUT'
  | 'VM_CRASHED'
  | 'VM_MEMORY_LIMIT'
  | 'VM_BUSY';

/** A failure of the VM or of loading the function, as opposed to a handler's own error. */
export class InvocationError extends Error {
  constructor(
    readonly code: InvocationErrorCode,
    message: string,
    readonly logs: LogLine[] = [],
    readonly guestError?: ErrorInfo,
  ) {
    super(message);
    this.name = 'InvocationError';
  }
}

/** What the handler did: returned a value (absent when it returned undefined) or threw. */
export type InvokeOutcome =
  | { ok: true; value?: unknown; logs: LogLine[]; durationMs: number }
  | { ok: false; error: ErrorInfo; logs: LogLine[]; durationMs: number };

export interface FunctionInit {
  functionName: string;
  code: string;
  handler: string;
  env: Record<string, string>;
  memoryLimitInMB: number;
  /** The function's own secrets, decrypted; only ever sent to this function's VM. */
  secrets?: Record<string, string>;
  /** Compile the whole module at load (function snapshots): see initMessageSchema. */
  eager?: boolean;
  /** An image function: `code` is its watchdog spec (see initMessageSchema). */
  watchdog?: boolean;
}

export interface RunRequest {
  callId: string;
  event: InvocationEvent;
  timeoutMs: number;
}

interface Waiter {
  expect: 'ready' | 'initialized' | 'result';
  callId?: string;
  logs: LogLine[];
  logBytes: number;
  onMessage(msg: GuestMessage): void;
  fail(err: InvocationError): void;
}

type ReadyInfo = Extract<GuestMessage, { type: 'ready' }>;

export class GuestSession {
  private readonly channel: GuestChannel;
  private waiter: Waiter | null = null;
  private failure: InvocationError | null = null;
  /** Log lines that arrived outside any operation (kept for debugging, bounded). */
  readonly stray: LogLine[] = [];
  ready: ReadyInfo | null = null;

  constructor(
    private readonly driver: HypervisorDriver,
    readonly vm: Vm,
    private readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
  ) {
    this.channel = new GuestChannel(vm.channel, {
      onMessage: (m) => this.onMessage(m),
      onFault: (f) => {
        if (f.code !== 'GUEST_CHANNEL_CLOSED') return this.end(new InvocationError(f.code, f.message));
        // The channel closes when the guest dies: report the VM's end (it follows within moments), not the socket's.
        const grace = setTimeout(() => this.end(new InvocationError(f.code, f.message)), 2000);
        void vm.exited.then(() => clearTimeout(grace));
      },
    });
    void vm.exited.then((exit) =>
      this.end(
        new InvocationError(
          exit.cause === 'memory-limit' ? 'VM_MEMORY_LIMIT' : 'VM_CRASHED',
          exit.reason === 'crashed'
            ? `the VM stopped unexpectedly (the guest crashed, e.g. it ran out of memory): ${exit.detail}`
            : `the VM was destroyed: ${exit.detail}`,
        ),
      ),
    );
  }

  /** Boots (or resumes) the prepared VM and waits for the agent's `ready`. Returns the boot time in ms. */
  async boot(): Promise<number> {
    const t0 = performance.now();
    const ready = this.await<ReadyInfo>('ready', this.limits.bootTimeoutMs, 'BOOT_TIMEOUT', 'the guest agent did not report ready');
    try {
      await this.driver.start(this.vm);
    } catch (err) {
      this.end(new InvocationError('VM_CRASHED', `the VM could not be started: ${(err as Error).message}`));
    }
    this.ready = (await ready).msg;
    return performance.now() - t0;
  }

  /**
   * First start of a VM restored from a template: resume it, give it fresh
   * entropy and its identity, and wait for its new `ready`. Returns the time in ms.
   */
  async resumeClone(entropy: Buffer): Promise<number> {
    const t0 = performance.now();
    try {
      await this.driver.start(this.vm);
    } catch (err) {
      this.end(new InvocationError('VM_CRASHED', `the clone could not be resumed: ${(err as Error).message}`));
    }
    await this.reseed(entropy);
    return performance.now() - t0;
  }

  /** Gives the running guest fresh entropy (a new key for its random sources) and waits for its `ready`. */
  async reseed(entropy: Buffer): Promise<void> {
    const ready = this.await<ReadyInfo>('ready', this.limits.bootTimeoutMs, 'BOOT_TIMEOUT', 'the guest did not answer a reseed');
    this.send({ type: 'reseed', entropy: entropy.toString('base64'), vmId: this.vm.id });
    this.ready = (await ready).msg;
  }

  async init(fn: FunctionInit): Promise<void> {
    const done = this.await<Extract<GuestMessage, { type: 'initialized' }>>(
      'initialized',
      this.limits.initTimeoutMs,
      'INIT_TIMEOUT',
      'the function did not finish loading',
    );
    this.send({ type: 'init', ...fn });
    const { msg, logs } = await done;
    if (!msg.ok) {
      throw new InvocationError('INIT_FAILED', `the function failed to load: ${msg.error.message}`, logs, msg.error);
    }
  }

  /** Runs the agent's invocation path once with its built-in no-op handler (see warmupMessageSchema). */
  async warmup(): Promise<void> {
    const done = this.await<Extract<GuestMessage, { type: 'result' }>>('result', this.limits.initTimeoutMs, 'INIT_TIMEOUT', 'the guest did not answer a warm-up', WARMUP_CALL_ID);
    this.send({ type: 'warmup' });
    await done;
  }

  /** Runs one invocation. Resolves with the handler's outcome; rejects with InvocationError when the VM failed. */
  async invoke(req: RunRequest): Promise<InvokeOutcome> {
    const t0 = performance.now();
    const result = this.await<Extract<GuestMessage, { type: 'result' }>>(
      'result',
      req.timeoutMs,
      'FUNCTION_TIMEOUT',
      `the function did not return within ${req.timeoutMs} ms; its VM was destroyed`,
      req.callId,
    );
    this.send({ type: 'run', callId: req.callId, event: req.event, timeoutMs: req.timeoutMs });
    const { msg, logs } = await result;
    const durationMs = performance.now() - t0;
    return msg.ok
      ? { ok: true, ...('value' in msg ? { value: msg.value } : {}), logs, durationMs }
      : { ok: false, error: msg.error, logs, durationMs };
  }

  /** Sends to the guest; a failure to send ends the session, which fails the pending operation. */
  private send(msg: HostMessage): void {
    try {
      this.channel.send(msg);
    } catch (err) {
      this.end(new InvocationError('VM_CRASHED', `could not send to the guest: ${(err as Error).message}`));
    }
  }

  /** Destroys the VM; pending operations fail. */
  async destroy(why: string): Promise<void> {
    this.end(new InvocationError('VM_CRASHED', `the VM was destroyed: ${why}`));
    await this.driver.destroy(this.vm, why);
  }

  get failed(): InvocationError | null {
    return this.failure;
  }

  private await<T extends GuestMessage>(
    expect: Waiter['expect'],
    timeoutMs: number,
    timeoutCode: InvocationErrorCode,
    timeoutMessage: string,
    callId?: string,
  ): Promise<{ msg: T; logs: LogLine[] }> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiter) return Promise.reject(new InvocationError('VM_BUSY', 'the VM is busy with another operation'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.end(new InvocationError(timeoutCode, timeoutMessage));
      }, timeoutMs);
      const w: Waiter = {
        expect,
        ...(callId !== undefined ? { callId } : {}),
        logs: [],
        logBytes: 0,
        onMessage: (m) => {
          clearTimeout(timer);
          this.waiter = null;
          resolve({ msg: m as T, logs: w.logs });
        },
        fail: (err) => {
          clearTimeout(timer);
          this.waiter = null;
          reject(new InvocationError(err.code, err.message, w.logs.length ? w.logs : err.logs, err.guestError));
        },
      };
      this.waiter = w;
    });
  }

  private onMessage(msg: GuestMessage): void {
    const w = this.waiter;
    if (msg.type === 'log') {
      const line = { stream: msg.stream, line: msg.line };
      if (w && (w.expect !== 'result' || msg.callId === w.callId)) {
        w.logBytes += Buffer.byteLength(msg.line);
        if (w.logBytes > this.limits.maxLogBytesPerCall || w.logs.length >= this.limits.maxLogLinesPerCall) {
          this.channel.fault(
            new GuestFault(
              'GUEST_LOG_LIMIT',
              `the function wrote more than ${this.limits.maxLogBytesPerCall} bytes or ${this.limits.maxLogLinesPerCall} lines of logs; its VM was destroyed`,
            ),
          );
          return;
        }
        w.logs.push(line);
      } else if (this.stray.length < 100) {
        this.stray.push(line);
      }
      return;
    }
    if (!w || msg.type !== w.expect || (msg.type === 'result' && msg.callId !== w.callId)) {
      this.channel.fault(new GuestFault('GUEST_BAD_MESSAGE', `guest sent an unexpected "${msg.type}" message`));
      return;
    }
    w.onMessage(msg);
  }

  /** First failure wins: record it, fail the waiter, destroy the VM. */
  private end(err: InvocationError): void {
    if (this.failure) return;
    this.failure = err;
    this.waiter?.fail(err);
    this.channel.close();
    void this.driver.destroy(this.vm, err.message).catch(() => {});
  }
}
