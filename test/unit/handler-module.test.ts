import { describe, expect, it } from 'vitest';
import { looksLikeEsm, pickHandler } from '../../functions/agent/handler-module.js';

describe('handler module shapes', () => {
  it.each([
    ['export async function handler() {}', true],
    ['export const handler = async () => 1;', true],
    ['export default async function () {}', true],
    ["import os from 'node:os';\nmodule.exports = 1", true],
    ['exports.handler = async () => 1;', false],
    ["const m = await import('x');\nmodule.exports = async () => 1", false],
    ['// export nothing\nmodule.exports = { handler() {} }', false],
  ])('%j is ESM: %s', (code, esm) => {
    expect(looksLikeEsm(code)).toBe(esm);
  });

  it('finds the handler by name, on the default export, or as the default function', () => {
    const named = async () => 'named';
    const def = async () => 'default';
    expect(pickHandler({ handler: named }, 'handler')).toBe(named);
    expect(pickHandler({ default: { handler: named } }, 'handler')).toBe(named);
    expect(pickHandler({ default: def }, 'handler')).toBe(def);
    expect(pickHandler({ other: named }, 'handler')).toBeNull();
  });
});
