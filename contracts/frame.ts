/**
 * Length-prefixed frames of the guest protocol (DESIGN.md, "Guest protocol").
 *
 * Wire format of one frame: the two magic bytes `M` `F`, a 32-bit big-endian
 * payload length, then that many bytes of UTF-8 JSON.
 *
 * The magic makes garbage on the channel fail on its first bytes instead of
 * being read as a huge length. This file has no dependencies: it is shipped into
 * the guest image next to the agent, so host and guest share one codec.
 */

export const FRAME_MAGIC_0 = 0x4d; // 'M'
export const FRAME_MAGIC_1 = 0x46; // 'F'
export const FRAME_HEADER_BYTES = 6;

export class FrameError extends Error {
  constructor(
    readonly code: 'FRAME_BAD_MAGIC' | 'FRAME_TOO_LARGE' | 'FRAME_BAD_JSON',
    message: string,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Encodes one JSON message as a frame. */
export function encodeFrame(message: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(message), 'utf8');
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  frame[0] = FRAME_MAGIC_0;
  frame[1] = FRAME_MAGIC_1;
  frame.writeUInt32BE(payload.length, 2);
  payload.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

/**
 * Incremental decoder. `push` bytes as they arrive; it returns the complete
 * messages found so far and throws a FrameError on the first violation. After a
 * throw the decoder is unusable (a byte stream cannot be resynchronised safely).
 * A declared length above `maxFrameBytes` is rejected from the header alone, so
 * a hostile peer cannot make the reader buffer it.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Total size of the frame being received, once its header was read. */
  private expected: number | null = null;
  private failed: FrameError | null = null;

  constructor(private readonly maxFrameBytes: number) {}

  push(chunk: Buffer): unknown[] {
    if (this.failed) throw this.failed;
    if (chunk.length === 0) return [];
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const messages: unknown[] = [];
    for (;;) {
      if (this.expected === null) {
        if (this.buffered < 2) break;
        const head = this.head(Math.min(this.buffered, FRAME_HEADER_BYTES));
        if (head[0] !== FRAME_MAGIC_0 || head[1] !== FRAME_MAGIC_1) {
          return this.fail(new FrameError('FRAME_BAD_MAGIC', `bad frame magic 0x${head.subarray(0, 2).toString('hex')}`));
        }
        if (head.length < FRAME_HEADER_BYTES) break;
        const length = head.readUInt32BE(2);
        if (length > this.maxFrameBytes) {
          return this.fail(
            new FrameError('FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes} bytes`),
          );
        }
        this.expected = FRAME_HEADER_BYTES + length;
      }
      if (this.buffered < this.expected) break;
      const frame = this.take(this.expected);
      this.expected = null;
      try {
        messages.push(JSON.parse(frame.toString('utf8', FRAME_HEADER_BYTES)));
      } catch (err) {
        return this.fail(new FrameError('FRAME_BAD_JSON', `frame is not valid JSON: ${(err as Error).message}`));
      }
    }
    return messages;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private fail(err: FrameError): never {
    this.failed = err;
    this.chunks = [];
    this.buffered = 0;
    throw err;
  }

  /** Copies the first n (<= header size) bytes, however the input was split. */
  private head(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.chunks) {
      off += c.copy(out, off, 0, Math.min(c.length, n - off));
      if (off === n) break;
    }
    return out;
  }

  /** Removes and returns the first n bytes: one concatenation per frame, so input split into tiny chunks stays linear. */
  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return all.subarray(0, n);
  }
}
