/**
 * Property-based tests (fast-check, fixed seed, bounded runs) of the worker's
 * guest-frame parser: whatever bytes a guest writes, the parser never throws,
 * reports at most one fault and nothing after it, never buffers more than one
 * frame's worth, and decodes valid frames exactly however they are split.
 */
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameError, FRAME_HEADER_BYTES } from '../../contracts/frame.js';
import type { GuestMessage } from '../../contracts/guest-protocol.js';
import { GuestChannel, type GuestFault } from '../../worker/guest-channel.js';

const RUNS = { seed: 20261129, numRuns: 300 };
const MAX = 4096;

function channel() {
  const stream = new PassThrough();
  const messages: GuestMessage[] = [];
  const faults: GuestFault[] = [];
  let afterFault = 0;
  new GuestChannel(stream, {
    onMessage: (m) => {
      if (faults.length) afterFault++;
      messages.push(m);
    },
    onFault: (f) => faults.push(f),
  }, MAX);
  return { stream, messages, faults, afterFault: () => afterFault };
}

const logMessage = fc.record({
  type: fc.constant('log' as const),
  callId: fc.option(fc.stringMatching(/^[a-z0-9-]{1,20}$/), { nil: null }),
  stream: fc.constantFrom('stdout' as const, 'stderr' as const),
  line: fc.string({ maxLength: 200 }),
});

/** Splits a buffer at random cut points. */
const splitArb = (buf: Buffer) =>
  fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, buf.length - 1) }), { maxLength: 20 }).map((cuts) => {
    const points = [0, ...cuts.filter((c) => c < buf.length).sort((a, b) => a - b), buf.length];
    return points.slice(1).map((end, i) => buf.subarray(points[i], end));
  });

describe('guest frame parser (fuzzed)', () => {
  it('never throws and faults at most once on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 600 }), { maxLength: 20 }), (chunks) => {
        const c = channel();
        for (const chunk of chunks) c.stream.write(Buffer.from(chunk));
        expect(c.faults.length).toBeLessThanOrEqual(1);
        expect(c.afterFault()).toBe(0);
      }),
      RUNS,
    );
  });

  it('decodes valid frames identically however the stream is split', () => {
    fc.assert(
      fc.property(
        fc.array(logMessage, { minLength: 1, maxLength: 10 }).chain((msgs) =>
          splitArb(Buffer.concat(msgs.map((m) => encodeFrame(m)))).map((parts) => ({ msgs, parts })),
        ),
        ({ msgs, parts }) => {
          const c = channel();
          for (const part of parts) c.stream.write(part);
          expect(c.faults).toEqual([]);
          expect(c.messages).toEqual(msgs);
        },
      ),
      RUNS,
    );
  });

  it('valid frames followed by garbage: the frames arrive, then exactly one fault', () => {
    fc.assert(
      fc.property(fc.array(logMessage, { maxLength: 5 }), fc.uint8Array({ minLength: 2, maxLength: 100 }), (msgs, junk) => {
        fc.pre(!(junk[0] === 0x4d && junk[1] === 0x46)); // not a frame header by chance
        const c = channel();
        for (const m of msgs) c.stream.write(encodeFrame(m));
        c.stream.write(Buffer.from(junk));
        expect(c.messages).toEqual(msgs);
        expect(c.faults.map((f) => f.code)).toEqual(['GUEST_BAD_FRAME']);
      }),
      RUNS,
    );
  });

  it('the decoder buffers at most one frame of the limit, and only throws FrameError', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 2000 }), { maxLength: 10 }), (chunks) => {
        const d = new FrameDecoder(MAX);
        try {
          for (const c of chunks) {
            d.push(Buffer.from(c));
            expect(d.pendingBytes).toBeLessThanOrEqual(MAX + FRAME_HEADER_BYTES + 2000);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(FrameError);
        }
      }),
      RUNS,
    );
  });
});
