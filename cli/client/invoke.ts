/** `mayfly invoke`: one call, sync or async; the body from --data or stdin. */
import { EXIT } from './errors.js';
import { printJson } from './output.js';
import { client, pairs, parse, readStdin, requireName } from './args.js';
import { PLATFORM_STATUS } from '../../lib/response-mapping.js';

/** Platform failures (exit 4); FUNCTION_TIMEOUT and INIT_FAILED are the function's own (exit 1). */
const PLATFORM_CODES = new Set(Object.keys(PLATFORM_STATUS).filter((c) => c !== 'FUNCTION_TIMEOUT' && c !== 'INIT_FAILED'));

// ---- invoke ------------------------------------------------------------------------------

export async function invoke(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    async: { type: 'boolean' },
    header: { type: 'string', short: 'H', multiple: true },
    query: { type: 'string', short: 'q', multiple: true },
    data: { type: 'string', short: 'd' },
    method: { type: 'string', short: 'X' },
    path: { type: 'string' },
    'callback-url': { type: 'string' },
    verbose: { type: 'boolean', short: 'v' },
  });
  const name = requireName(positionals, 'mayfly invoke NAME [--data BODY]');
  const c = client(values);
  const body = values.data !== undefined ? Buffer.from(values.data) : process.stdin.isTTY ? undefined : await readStdin();
  const qs = new URLSearchParams(pairs(values.query, '=', '--query')).toString();
  const sub = values.path ? `/${values.path.replace(/^\/+/, '')}` : '';
  const headers = pairs(values.header, ':', '--header');
  if (values['callback-url']) headers['x-callback-url'] = values['callback-url'];
  const method = values.async ? 'POST' : (values.method ?? (body && body.length > 0 ? 'POST' : 'GET')).toUpperCase();
  const url = `/${values.async ? 'async-function' : 'function'}/${encodeURIComponent(name)}${sub}${qs ? `?${qs}` : ''}`;
  const r = await c.raw(method, url, { ...(body && method !== 'GET' && method !== 'HEAD' ? { body } : {}), headers });
  const callId = r.headers.get('x-call-id') ?? undefined;
  if (values.json) {
    printJson({ status: r.status, callId, start: r.headers.get('x-mayfly-start') ?? undefined, durationSeconds: Number(r.headers.get('x-duration-seconds') ?? NaN) || undefined, body: r.text });
  } else if (values.async && r.status === 202) {
    process.stdout.write(`${callId}\n`);
    process.stderr.write(`queued; result: mayfly calls ${name} or GET /system/invocations/${callId}\n`);
  } else {
    process.stdout.write(r.text.endsWith('\n') || r.text === '' ? r.text : `${r.text}\n`);
    if (values.verbose || r.status >= 400) {
      process.stderr.write(`HTTP ${r.status}, call ${callId ?? '-'}, start ${r.headers.get('x-mayfly-start') ?? '-'}, ${r.headers.get('x-duration-seconds') ?? '?'} s\n`);
    }
  }
  return invokeExitCode(r.status, callId, r.text);
}

/**
 * 0 below 400; 3 when the gateway refused before any call (no call id: unknown
 * function, bad request, not authorised); 4 for a platform failure (a 5xx whose
 * code is the platform's: no capacity, VM fault); 1 when the function answered
 * with an error (it threw, failed to load, timed out, or returned a 4xx/5xx itself).
 */
export function invokeExitCode(status: number, callId: string | undefined, body: string): number {
  if (status < 400) return EXIT.ok;
  if (!callId) return status >= 500 ? EXIT.unavailable : EXIT.refused;
  let code: unknown;
  try {
    code = (JSON.parse(body) as { code?: unknown }).code;
  } catch {
    // the function's own body
  }
  if (status >= 500 && typeof code === 'string' && code !== 'FUNCTION_ERROR' && /^[A-Z_]+$/.test(code) && PLATFORM_CODES.has(code)) return EXIT.unavailable;
  return EXIT.functionError;
}

