/**
 * The web console under /ui/ (registered from gateway/routes.ts):
 *   GET  /ui/                 the page (the app runs in the browser, hash routes #/functions ...)
 *   GET  /ui/assets/:file     its script, style and source maps
 *   GET  /ui/api/session      who is logged in, and the session's CSRF token
 *   POST /ui/api/login        credentials in the Authorization header (Basic admin or Bearer API token)
 *                             → session cookie (HttpOnly, SameSite=Strict, Secure over TLS)
 *   POST /ui/api/logout       ends the session (needs the CSRF token)
 * Everything else the console shows comes from the API routes (/system/*, /function/*),
 * called with the session cookie and, when they change state, the CSRF token.
 * Every answer under /ui carries a strict Content-Security-Policy.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { GatewayDeps } from '../deps.js';
import { GatewayError } from '../errors.js';
import { Assets } from './assets.js';
import { CONSOLE_CSP, CONSOLE_HTML } from './page.js';

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

export function consolePlugin(deps: GatewayDeps, assets = new Assets()) {
  return async function consoleRoutes(scope: FastifyInstance): Promise<void> {
    scope.addHook('onSend', async (request, reply, payload) => {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
      if (request.url.startsWith('/ui/api/')) reply.header('cache-control', 'no-store');
      return payload;
    });

    const page = async (_request: FastifyRequest, reply: FastifyReply) =>
      reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(CONSOLE_HTML);
    scope.get('/', page);

    scope.get('/assets/:file', async (request, reply) => {
      const name = (request.params as { file: string }).file;
      let asset;
      try {
        asset = assets.get(name);
      } catch (err) {
        throw new GatewayError(503, 'CONSOLE_NOT_BUILT', (err as Error).message);
      }
      if (!asset) throw new GatewayError(404, 'NOT_FOUND', `no console asset ${JSON.stringify(name.slice(0, 64))}`);
      return reply.type(asset.type).header('cache-control', 'no-cache').send(asset.body);
    });

    const auth = deps.auth?.enabled ? deps.auth : undefined;
    const sessions = auth?.sessions;

    scope.get('/api/session', async (request) => {
      if (!auth) return { authEnabled: false, principal: null, csrf: null };
      const s = sessions ? await sessions.fromRequest(request) : null;
      return s
        ? { authEnabled: true, principal: s.principal, csrf: s.csrf, expiresAt: new Date(s.expiresAt).toISOString() }
        : { authEnabled: true, principal: null, csrf: null };
    });

    scope.post('/api/login', async (request, reply) => {
      if (!auth) throw new GatewayError(409, 'AUTH_OFF', 'authentication is off on this gateway (MAYFLY_AUTH=off): no login needed');
      if (!sessions) throw new GatewayError(501, 'NOT_CONFIGURED', 'console sessions are not configured on this gateway');
      if (!request.headers.authorization) {
        throw new GatewayError(400, 'CREDENTIALS_REQUIRED', 'send the admin user and password (Basic) or an API token (Bearer) in the Authorization header');
      }
      const principal = await auth.require(request);
      const s = sessions.issue(principal);
      request.log.info({ principal: principal.kind === 'admin' ? principal.user : `token ${principal.id}` }, 'console login');
      return reply
        .header('set-cookie', sessions.cookie(s.value, request.protocol === 'https'))
        .send({ principal, csrf: s.csrf, expiresAt: new Date(s.expiresAt).toISOString() });
    });

    scope.post('/api/logout', async (request, reply) => {
      if (sessions) {
        const s = await sessions.fromRequest(request);
        if (s) sessions.checkCsrf(request, s.csrf);
        reply.header('set-cookie', sessions.cookie('', request.protocol === 'https'));
      }
      return reply.code(204).send();
    });
  };
}
