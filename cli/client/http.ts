/** The client's one way to talk to a gateway: fetch with credentials, errors as CliError with the gateway's message. */
import { CliError, EXIT } from './errors.js';
import type { Credentials } from './credentials.js';

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
}

export class GatewayClient {
  constructor(
    readonly gateway: string,
    private readonly creds: Credentials | null,
  ) {}

  authHeader(): Record<string, string> {
    if (!this.creds) return {};
    if (this.creds.kind === 'token') return { authorization: `Bearer ${this.creds.token}` };
    return { authorization: `Basic ${Buffer.from(`${this.creds.user}:${this.creds.password}`).toString('base64')}` };
  }

  /** Any request; network failures become exit 4 with the gateway named. */
  async raw(method: string, path: string, init: { body?: string | Buffer; headers?: Record<string, string>; auth?: boolean } = {}): Promise<Reply> {
    let res: Response;
    try {
      res = await fetch(`${this.gateway}${path}`, {
        method,
        headers: { ...(init.auth === false ? {} : this.authHeader()), ...init.headers },
        ...(init.body !== undefined ? { body: typeof init.body === "string" ? init.body : new Uint8Array(init.body) } : {}),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(
        `cannot reach the gateway at ${this.gateway} (${cause?.code ?? cause?.message ?? (err as Error).message}); is the platform running (npm start)? Set it with --gateway or MAYFLY_GATEWAY`,
        EXIT.unavailable,
      );
    }
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  /** A /system call: JSON in and out; a non-2xx is a CliError with the gateway's message. */
  async system<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.raw(method, path, body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    if (r.status >= 400) throw this.error(r);
    if (r.text === '') return undefined as T;
    try {
      return JSON.parse(r.text) as T;
    } catch {
      return r.text as T;
    }
  }

  error(r: Reply): CliError {
    let message = r.text.trim() || `HTTP ${r.status}`;
    let code = '';
    try {
      const j = JSON.parse(r.text) as { error?: string; code?: string };
      if (j.error) message = j.error;
      if (j.code) code = j.code;
    } catch {
      // not JSON
    }
    if (r.status === 401) {
      message = `${message} — the gateway at ${this.gateway} wants credentials: run \`mayfly login --gateway ${this.gateway}\` (or set MAYFLY_TOKEN)`;
    }
    return new CliError(`${code ? `${code}: ` : ''}${message} (HTTP ${r.status})`, r.status >= 500 ? EXIT.unavailable : EXIT.refused);
  }
}
