/**
 * Authentication of the management API (on by default):
 *   /system/*   admin Basic auth (faas-cli login) or a bearer API token
 *   /metrics    the same when MAYFLY_METRICS_AUTH is on (off by default)
 *   /healthz    always open
 *   invocations open, unless the function has the annotation
 *               `com.mayfly.auth: token`; then a valid token (or admin) is required
 * Secrets are compared in constant time; failed attempts are rate-limited per
 * client address and logged with the user name but never the secret. An empty
 * `Authorization: Bearer ` (faas-cli sends it) counts as no credentials.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { FunctionRecord } from '../contracts/functions.js';
import { safeEqual, type TokenInfo } from '../lib/tokens.js';
import type { ConsoleSessions } from './console/session.js';
import { GatewayError } from './errors.js';

export interface ApiTokens {
  verify(token: string): Promise<TokenInfo | null>;
}

export interface AuthOptions {
  enabled: boolean;
  adminUser: string;
  adminPassword: string;
  tokens: ApiTokens;
  metricsAuth: boolean;
  /** Failed attempts per client address and minute before 429. */
  maxFailuresPerMinute?: number;
  /** The web console's session cookies (gateway/console): used when a request sends no Authorization header. */
  sessions?: ConsoleSessions;
}

export const FUNCTION_AUTH_ANNOTATION = 'com.mayfly.auth';

export type Principal = { kind: 'admin'; user: string } | { kind: 'token'; id: string; name: string };

/** Sliding one-minute window of failures per address. Bounded: old addresses are forgotten. */
class FailureLimiter {
  private readonly failures = new Map<string, number[]>();
  constructor(private readonly max: number) {}

  blocked(addr: string): number {
    const list = this.prune(addr);
    return list.length >= this.max ? Math.ceil((list[0]! + 60_000 - Date.now()) / 1000) : 0;
  }

  record(addr: string): void {
    const list = this.prune(addr);
    list.push(Date.now());
    this.failures.set(addr, list);
    if (this.failures.size > 10_000) this.failures.delete(this.failures.keys().next().value!);
  }

  private prune(addr: string): number[] {
    const since = Date.now() - 60_000;
    const list = (this.failures.get(addr) ?? []).filter((t) => t > since);
    if (list.length) this.failures.set(addr, list);
    else this.failures.delete(addr);
    return list;
  }
}

export class Authenticator {
  private readonly limiter: FailureLimiter;

  constructor(private readonly opts: AuthOptions) {
    this.limiter = new FailureLimiter(opts.maxFailuresPerMinute ?? 20);
  }

  get enabled(): boolean {
    return this.opts.enabled;
  }

  /** The console's sessions, when the console may log in (gateway/console). */
  get sessions(): ConsoleSessions | undefined {
    return this.opts.sessions;
  }

  /** The caller's identity from its Authorization header; null when it sent none. Throws 401/429 on bad ones. */
  async authenticate(request: FastifyRequest): Promise<Principal | null> {
    const header = request.headers.authorization;
    if (!header || /^Bearer\s*$/i.test(header)) return (await this.opts.sessions?.principal(request)) ?? null;
    const addr = request.ip;
    const wait = this.limiter.blocked(addr);
    if (wait > 0) {
      throw new GatewayError(429, 'TOO_MANY_FAILED_ATTEMPTS', `too many failed authentication attempts; retry in ${wait} s`, {
        retryAfterSeconds: wait,
      });
    }
    let principal: Principal | null = null;
    let user = '';
    const basic = /^Basic\s+(.+)$/i.exec(header);
    const bearer = /^Bearer\s+(\S+)$/i.exec(header);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      user = i < 0 ? decoded : decoded.slice(0, i);
      const pass = i < 0 ? '' : decoded.slice(i + 1);
      // Both compared, always, in constant time.
      const userOk = safeEqual(user, this.opts.adminUser);
      const passOk = safeEqual(pass, this.opts.adminPassword);
      if (userOk && passOk) principal = { kind: 'admin', user };
    } else if (bearer) {
      const info = await this.opts.tokens.verify(bearer[1]!);
      if (info) principal = { kind: 'token', id: info.id, name: info.name };
    }
    if (!principal) {
      this.limiter.record(addr);
      request.log.warn({ addr, user: user.slice(0, 64), scheme: basic ? 'basic' : bearer ? 'bearer' : 'other' }, 'authentication failed');
      throw unauthorized();
    }
    return principal;
  }

  /** For routes that need credentials. */
  async require(request: FastifyRequest): Promise<Principal> {
    const p = await this.authenticate(request);
    if (!p) throw unauthorized();
    return p;
  }

  /** Invocation of a function that asks for a token. */
  async checkInvoke(request: FastifyRequest, fn: FunctionRecord): Promise<void> {
    if (!this.opts.enabled || fn.annotations[FUNCTION_AUTH_ANNOTATION] !== 'token') return;
    await this.require(request);
  }

  /** Guards /system/* (and /metrics when configured) for the whole app. */
  install(app: FastifyInstance): void {
    if (!this.opts.enabled) return;
    app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      const path = request.url.split('?')[0] ?? '';
      const guarded = path.startsWith('/system/') || path === '/system' || (this.opts.metricsAuth && path === '/metrics');
      if (!guarded) return;
      try {
        await this.require(request);
      } catch (err) {
        if (err instanceof GatewayError && err.statusCode === 401 && !this.opts.sessions?.quiet(request)) reply.header('www-authenticate', 'Basic realm="mayfly"');
        if (err instanceof GatewayError && err.statusCode === 429) reply.header('retry-after', String(err.details.retryAfterSeconds));
        throw err;
      }
    });
  }
}

function unauthorized(): GatewayError {
  // The same answer for a wrong user, a wrong password, a bad or revoked token: no detail leaks.
  return new GatewayError(401, 'UNAUTHORIZED', 'authentication required: use Basic auth (faas-cli login) or an API token');
}
