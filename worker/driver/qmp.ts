/**
 * Minimal QMP (QEMU Machine Protocol) client over a unix socket: line-delimited
 * JSON, one greeting, `qmp_capabilities`, then commands answered in order.
 * Asynchronous events are passed to `onEvent`.
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    message: string,
  ) {
    super(`QMP ${command}: ${qmpClass}: ${message}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

const MAX_LINE = 1024 * 1024;

export class QmpClient extends EventEmitter {
  private buffer = '';
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: Error | null = null;

  private constructor(private readonly socket: net.Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('QMP connection closed')));
  }

  /** Takes a connected socket, waits for the greeting and negotiates capabilities. */
  static async open(socket: net.Socket, timeoutMs: number): Promise<QmpClient> {
    const client = new QmpClient(socket);
    const greeting = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
      client.once('greeting', () => {
        clearTimeout(timer);
        resolve();
      });
      client.once('closed', (err: Error) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    try {
      await greeting;
      await client.execute('qmp_capabilities');
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  close(): void {
    this.socket.destroy();
    this.fail(new Error('QMP connection closed'));
  }

  private onData(data: string): void {
    this.buffer += data;
    if (this.buffer.length > MAX_LINE && !this.buffer.includes('\n')) {
      this.socket.destroy(new Error('QMP line too long'));
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.emit('greeting', msg);
      return;
    }
    if ('event' in msg) {
      this.emit('qmp-event', msg);
      return;
    }
    const id = msg.id as number | undefined;
    const p = id !== undefined ? this.pending.get(id) : undefined;
    if (!p || id === undefined) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? 'Error', e.desc ?? 'unknown error'));
    } else {
      p.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const p of this.pending.values()) p.reject(new Error(`QMP ${p.command}: ${err.message}`));
    this.pending.clear();
    this.emit('closed', err);
  }
}
