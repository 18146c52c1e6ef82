/** Structured JSON logs (pino) for the services; Fastify's logger is the same pino. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(service: string): Logger {
  return pino({ name: `mayfly-${service}`, level: process.env.MAYFLY_LOG_LEVEL ?? 'info' });
}
