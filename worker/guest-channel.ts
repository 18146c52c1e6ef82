/**
 * Host side of the guest channel. Everything the guest writes is hostile input:
 * frames are bounded (the length is checked from the header, before any of the
 * payload is buffered), must carry valid JSON that matches the guest protocol
 * schemas, and the first violation ends the channel with a coded error. The
 * caller (GuestSession) then destroys the VM.
 */
import type { Duplex } from 'node:stream';
import { encodeFrame, FrameDecoder, FrameError } from '../contracts/frame.js';
import { guestMessageSchema, MAX_FRAME_BYTES, type GuestMessage, type HostMessage } from '../contracts/guest-protocol.js';

export type GuestFaultCode =
  | 'GUEST_BAD_FRAME'
  | 'GUEST_FRAME_TOO_LARGE'
  | 'GUEST_BAD_MESSAGE'
  | 'GUEST_LOG_LIMIT'
  | 'GUEST_CHANNEL_CLOSED';

export class GuestFault extends Error {
  constructor(
    readonly code: GuestFaultCode,
    message: string,
  ) {
    super(message);
    this.name = 'GuestFault';
  }
}

export interface GuestChannelHandlers {
  onMessage(msg: GuestMessage): void;
  /** Called once, on the first violation or when the channel closes. */
  onFault(fault: GuestFault): void;
}

export class GuestChannel {
  private readonly decoder: FrameDecoder;
  private ended = false;

  constructor(
    private readonly stream: Duplex,
    private readonly handlers: GuestChannelHandlers,
    maxFrameBytes = MAX_FRAME_BYTES,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes);
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('close', () => this.fault(new GuestFault('GUEST_CHANNEL_CLOSED', 'the guest channel closed')));
    stream.on('error', () => {});
  }

  send(message: HostMessage): void {
    if (this.ended) throw new GuestFault('GUEST_CHANNEL_CLOSED', 'the guest channel is closed');
    this.stream.write(encodeFrame(message));
  }

  /** Stops reading; later bytes are ignored. */
  close(): void {
    this.ended = true;
    this.stream.destroy();
  }

  fault(f: GuestFault): void {
    if (this.ended) return;
    this.ended = true;
    this.stream.pause();
    this.handlers.onFault(f);
  }

  private onData(chunk: Buffer): void {
    if (this.ended) return;
    let messages: unknown[];
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      const e = err as FrameError;
      this.fault(
        new GuestFault(e.code === 'FRAME_TOO_LARGE' ? 'GUEST_FRAME_TOO_LARGE' : 'GUEST_BAD_FRAME', `guest sent ${e.message}`),
      );
      return;
    }
    for (const raw of messages) {
      if (this.ended) return;
      const parsed = guestMessageSchema.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        this.fault(
          new GuestFault(
            'GUEST_BAD_MESSAGE',
            `guest sent an invalid message: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'unknown'}`,
          ),
        );
        return;
      }
      this.handlers.onMessage(parsed.data);
    }
  }
}
