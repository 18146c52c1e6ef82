/** A local HTTP server that records the callbacks Mayfly POSTs (loopback only). */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Callback {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

export class CallbackReceiver {
  readonly received: Callback[] = [];
  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<CallbackReceiver> {
    let self: CallbackReceiver | null = null;
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        self!.received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() });
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    self = new CallbackReceiver(server);
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/done`;
  }

  forCall(callId: string): Callback[] {
    return this.received.filter((c) => c.headers['x-call-id'] === callId);
  }

  async waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}
