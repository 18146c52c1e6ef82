import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { encodeFrame } from '../../contracts/frame.js';
import { GuestChannel, type GuestFault } from '../../worker/guest-channel.js';

function channel(maxFrame = 1024) {
  const stream = new PassThrough();
  const messages: unknown[] = [];
  const faults: GuestFault[] = [];
  const ch = new GuestChannel(stream, { onMessage: (m) => messages.push(m), onFault: (f) => faults.push(f) }, maxFrame);
  return { stream, messages, faults, ch };
}

describe('GuestChannel', () => {
  it('passes valid guest messages through', () => {
    const { stream, messages, faults } = channel();
    stream.write(encodeFrame({ type: 'log', callId: 'c1', stream: 'stdout', line: 'hello' }));
    stream.write(encodeFrame({ type: 'result', callId: 'c1', ok: true, value: { a: 1 } }));
    expect(messages).toEqual([
      { type: 'log', callId: 'c1', stream: 'stdout', line: 'hello' },
      { type: 'result', callId: 'c1', ok: true, value: { a: 1 } },
    ]);
    expect(faults).toEqual([]);
  });

  it.each([
    ['unknown type', { type: 'shell', cmd: 'rm -rf /' }],
    ['extra field', { type: 'log', callId: null, stream: 'stdout', line: 'x', extra: 1 }],
    ['wrong field type', { type: 'result', callId: 'c', ok: 'yes' }],
    ['overlong log line', { type: 'log', callId: null, stream: 'stdout', line: 'x'.repeat(9000) }],
  ])('faults once on a message with %s and ignores what follows', (_n, msg) => {
    const { stream, messages, faults } = channel(64 * 1024);
    stream.write(encodeFrame(msg));
    stream.write(encodeFrame({ type: 'log', callId: null, stream: 'stdout', line: 'after' }));
    expect(messages).toEqual([]);
    expect(faults.map((f) => f.code)).toEqual(['GUEST_BAD_MESSAGE']);
  });

  it('faults on oversized frames and on garbage', () => {
    const a = channel(100);
    a.stream.write(encodeFrame({ type: 'log', callId: null, stream: 'stdout', line: 'y'.repeat(200) }));
    expect(a.faults.map((f) => f.code)).toEqual(['GUEST_FRAME_TOO_LARGE']);
    const b = channel();
    b.stream.write(Buffer.from([1, 2, 3, 4, 5, 6, 7]));
    expect(b.faults.map((f) => f.code)).toEqual(['GUEST_BAD_FRAME']);
  });
});
