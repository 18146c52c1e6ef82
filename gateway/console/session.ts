/**
 * Console sessions: after a login with the admin password or an API token, the
 * browser holds a signed session cookie (HttpOnly, SameSite=Strict, Secure over
 * TLS) instead of the credentials. Every state-changing request made with that
 * cookie must also carry the session's CSRF token in `X-CSRF-Token`.
 *
 * Stateless: the cookie is `base64url(payload).base64url(HMAC-SHA256(payload))`
 * with a key derived from the operator's secrets key, so every gateway of a
 * deployment accepts it and rotating that key logs everybody out. The CSRF
 * token is HMAC(key, "csrf." + session id): bound to one session, never stored.
 * A session of an API token ends when the token is revoked.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { safeEqual } from '../../lib/tokens.js';
import { GatewayError } from '../errors.js';

export const SESSION_COOKIE = 'mayfly_session';
export const CSRF_HEADER = 'x-csrf-token';
/** Sent by the console's own requests: a 401 then carries no WWW-Authenticate (no browser password prompt). */
export const CONSOLE_HEADER = 'x-mayfly-console';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

const principalSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('admin'), user: z.string() }),
  z.object({ kind: z.literal('token'), id: z.string(), name: z.string() }),
]);
export type SessionPrincipal = z.infer<typeof principalSchema>;

const payloadSchema = z.object({ sid: z.string().min(16), p: principalSchema, exp: z.number() });
type Payload = z.infer<typeof payloadSchema>;

export interface ConsoleSessionOptions {
  /** HMAC key (at least 32 bytes). */
  key: Buffer;
  ttlMs: number;
  /** Whether an API token still exists (a revoked token ends its sessions). */
  tokenAlive?: (id: string) => Promise<boolean>;
}

/** Derives the session key from the operator's secrets key (one key per deployment, never the same bytes). */
export function sessionKeyFrom(secretsKey: Buffer): Buffer {
  return createHmac('sha256', secretsKey).update('mayfly-console-session-v1').digest();
}

/** Value of one cookie from a Cookie header (RFC 6265 syntax: `a=1; b=2`). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    if (part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * Invocation headers without the console's credentials: a function must never
 * see an operator's session cookie or CSRF token (the console and functions share
 * one origin, so the browser sends the cookie to /function/* too).
 */
export function withoutConsoleCredentials(headers: Record<string, string>): Record<string, string> {
  const cookie = headers.cookie;
  if (cookie !== undefined) {
    const kept = cookie
      .split(';')
      .map((c) => c.trim())
      .filter((c) => c !== '' && c.slice(0, c.indexOf('=')).trim() !== SESSION_COOKIE)
      .join('; ');
    if (kept) headers.cookie = kept;
    else delete headers.cookie;
  }
  delete headers[CSRF_HEADER];
  return headers;
}

export class ConsoleSessions {
  constructor(private readonly opts: ConsoleSessionOptions) {
    if (opts.key.length < 32) throw new Error('the console session key must be at least 32 bytes');
  }

  get ttlMs(): number {
    return this.opts.ttlMs;
  }

  /** A new session for this principal: the cookie value and its CSRF token. */
  issue(p: SessionPrincipal, now = Date.now()): { value: string; csrf: string; expiresAt: number } {
    const payload: Payload = { sid: randomBytes(18).toString('base64url'), p, exp: now + this.opts.ttlMs };
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    return { value: `${body}.${this.mac(body)}`, csrf: this.csrfOf(payload.sid), expiresAt: payload.exp };
  }

  /** The session in a cookie value, or null when it is absent, forged, malformed or expired. */
  read(value: string | undefined, now = Date.now()): { sid: string; principal: SessionPrincipal; csrf: string; expiresAt: number } | null {
    if (!value || value.length > 4096) return null;
    const dot = value.indexOf('.');
    if (dot < 0) return null;
    const body = value.slice(0, dot);
    if (!safeEqual(value.slice(dot + 1), this.mac(body))) return null;
    let parsed: ReturnType<typeof payloadSchema.safeParse>;
    try {
      parsed = payloadSchema.safeParse(JSON.parse(Buffer.from(body, 'base64url').toString('utf8')));
    } catch {
      return null;
    }
    if (!parsed.success || parsed.data.exp <= now) return null;
    return { sid: parsed.data.sid, principal: parsed.data.p, csrf: this.csrfOf(parsed.data.sid), expiresAt: parsed.data.exp };
  }

  /** The session of a request (from its cookie), if valid and its token not revoked. */
  async fromRequest(request: FastifyRequest): Promise<ReturnType<ConsoleSessions['read']>> {
    const s = this.read(readCookie(request.headers.cookie, SESSION_COOKIE));
    if (!s) return null;
    if (s.principal.kind === 'token' && this.opts.tokenAlive && !(await this.opts.tokenAlive(s.principal.id))) return null;
    return s;
  }

  /**
   * For the Authenticator: the principal of a request that sent no Authorization
   * header, from its session cookie; null without a valid session. A state-changing
   * request with a session but without its CSRF token is refused (403 CSRF_INVALID).
   */
  async principal(request: FastifyRequest): Promise<SessionPrincipal | null> {
    const s = await this.fromRequest(request);
    if (!s) return null;
    if (!SAFE_METHODS.has(request.method)) this.checkCsrf(request, s.csrf);
    return s.principal;
  }

  checkCsrf(request: FastifyRequest, expected: string): void {
    const sent = request.headers[CSRF_HEADER];
    if (typeof sent !== 'string' || !safeEqual(sent, expected)) {
      throw new GatewayError(
        403,
        'CSRF_INVALID',
        `missing or wrong ${CSRF_HEADER} header: console requests that change state must send the token from GET /ui/api/session`,
      );
    }
  }

  /** Whether a 401 should go without WWW-Authenticate (a console request: no browser password dialog). */
  quiet(request: FastifyRequest): boolean {
    return request.headers[CONSOLE_HEADER] !== undefined || readCookie(request.headers.cookie, SESSION_COOKIE) !== undefined;
  }

  /** Set-Cookie value for a session (or, with value '', one that deletes it). */
  cookie(value: string, secure: boolean): string {
    const maxAge = value === '' ? 0 : Math.floor(this.opts.ttlMs / 1000);
    return `${SESSION_COOKIE}=${value}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
  }

  private mac(body: string): string {
    return createHmac('sha256', this.opts.key).update(body).digest('base64url');
  }

  private csrfOf(sid: string): string {
    return createHmac('sha256', this.opts.key).update(`csrf.${sid}`).digest('base64url');
  }
}
