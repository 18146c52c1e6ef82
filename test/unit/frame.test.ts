import { describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder, FrameError } from '../../contracts/frame.js';

describe('frame codec', () => {
  it('round-trips messages split at every byte boundary', () => {
    const msgs = [{ type: 'a', n: 1 }, { type: 'b', s: 'ünïcødé 🦋' }, { type: 'c', big: 'x'.repeat(70_000) }];
    const wire = Buffer.concat(msgs.map(encodeFrame));
    for (const step of [1, 2, 5, 6, 7, 4096, wire.length]) {
      const d = new FrameDecoder(1 << 20);
      const out: unknown[] = [];
      for (let i = 0; i < wire.length; i += step) out.push(...d.push(wire.subarray(i, i + step)));
      expect(out).toEqual(msgs);
      expect(d.pendingBytes).toBe(0);
    }
  });

  it('rejects an oversized frame from its header, before the payload arrives', () => {
    const d = new FrameDecoder(1000);
    const header = Buffer.from([0x4d, 0x46, 0, 0, 0x03, 0xe9]); // 1001 bytes declared
    expect(() => d.push(header)).toThrowError(expect.objectContaining({ code: 'FRAME_TOO_LARGE' }));
    // and stays failed
    expect(() => d.push(Buffer.from('{}'))).toThrow(FrameError);
  });

  it('rejects garbage on the first two bytes and invalid JSON', () => {
    expect(() => new FrameDecoder(100).push(Buffer.from('GET / HTTP/1.1'))).toThrowError(
      expect.objectContaining({ code: 'FRAME_BAD_MAGIC' }),
    );
    const bad = Buffer.concat([Buffer.from([0x4d, 0x46, 0, 0, 0, 3]), Buffer.from('{x}')]);
    expect(() => new FrameDecoder(100).push(bad)).toThrowError(expect.objectContaining({ code: 'FRAME_BAD_JSON' }));
  });
});
