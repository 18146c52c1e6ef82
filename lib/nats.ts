/** NATS connection for the services: named, reconnecting forever, waiting for the server at start. */
import { connect, type NatsConnection } from '@nats-io/transport-node';

export type { NatsConnection };

export async function connectNats(url: string, name: string, waitMs = 30_000): Promise<NatsConnection> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`cannot reach NATS at ${url}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

export const jsonCodec = {
  encode: (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v)),
  decode: (b: Uint8Array): unknown => JSON.parse(new TextDecoder().decode(b)),
};
