/**
 * How the agent finds the user's handler in a single-file module, ESM or
 * CommonJS, in the shapes Lambda and OpenFaaS users write. Shipped into the
 * guest with the agent: Node built-ins only.
 */

export type Handler = (event: unknown, context: unknown) => unknown;

/** ES module syntax at the start of a line means ESM; anything else is loaded as CommonJS. */
export function looksLikeEsm(code: string): boolean {
  return /^\s*(import\s*[\w{*'"]|export\s)/m.test(code);
}

export function pickHandler(mod: Record<string, unknown>, name: string): Handler | null {
  const def = mod.default as Record<string, unknown> | Handler | undefined;
  const candidates = [mod[name], def && typeof def === 'object' ? def[name] : undefined, def];
  for (const c of candidates) if (typeof c === 'function') return c as Handler;
  return null;
}

