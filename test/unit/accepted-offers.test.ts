import { describe, expect, it } from 'vitest';
import { AcceptedOffers, KEEP_MS, MAX_KEPT } from '../../worker/accepted-offers.js';

describe('AcceptedOffers', () => {
  it('knows an accepted offer again by its reply subject, for KEEP_MS', () => {
    let now = 1_000_000;
    const o = new AcceptedOffers(() => now);
    expect(o.has('mayfly.async.result.1.abc')).toBe(false);
    o.add('mayfly.async.result.1.abc');
    expect(o.has('mayfly.async.result.1.abc')).toBe(true);
    expect(o.has('mayfly.async.result.2.abc')).toBe(false); // the next attempt is a new offer
    now += KEEP_MS + 1;
    expect(o.has('mayfly.async.result.1.abc')).toBe(false);
  });

  it('keeps at most MAX_KEPT, dropping the oldest', () => {
    const o = new AcceptedOffers(() => 5);
    for (let i = 0; i <= MAX_KEPT; i++) o.add(`r${i}`);
    expect(o.has('r0')).toBe(false);
    expect(o.has('r1')).toBe(true);
    expect(o.has(`r${MAX_KEPT}`)).toBe(true);
  });
});
