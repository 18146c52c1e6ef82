/**
 * Calls the gateway's own routes with the session cookie (same origin) and, on
 * every request, the session's CSRF token. Errors come back as ApiError with
 * the gateway's code and message.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf: string | null = null;
let onUnauthorized: () => void = () => {};

export function setCsrf(token: string | null): void {
  csrf = token;
}

export function whenUnauthorized(fn: () => void): void {
  onUnauthorized = fn;
}

export function headers(extra: Record<string, string> = {}): Record<string, string> {
  return { 'x-mayfly-console': '1', ...(csrf ? { 'x-csrf-token': csrf } : {}), ...extra };
}

/** Raw fetch to a gateway path with the console's headers. */
export function send(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(path, { credentials: 'same-origin', ...init, headers: headers((init.headers as Record<string, string>) ?? {}) });
}

async function fail(res: Response): Promise<never> {
  let code = `HTTP_${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as { code?: string; error?: string };
    if (body.code) code = body.code;
    if (body.error) message = body.error;
  } catch {
    // not JSON
  }
  if (res.status === 401) onUnauthorized();
  throw new ApiError(res.status, code, message);
}

export async function getJson<T>(path: string): Promise<T> {
  const res = await send(path);
  if (!res.ok) return fail(res);
  return (await res.json()) as T;
}

export async function getText(path: string): Promise<string> {
  const res = await send(path);
  if (!res.ok) return fail(res);
  return res.text();
}

/** A state-changing request with a JSON body; resolves with the parsed answer (or null when empty). */
export async function call<T = unknown>(method: string, path: string, body?: unknown): Promise<T | null> {
  const res = await send(path, {
    method,
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
  });
  if (!res.ok) return fail(res);
  const text = await res.text();
  return text ? (JSON.parse(text) as T) : null;
}

export function b64(s: string): string {
  let bin = '';
  for (const byte of new TextEncoder().encode(s)) bin += String.fromCharCode(byte);
  return btoa(bin);
}
