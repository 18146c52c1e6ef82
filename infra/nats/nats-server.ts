/**
 * Starts and stops a nats-server (Debian's package) with JetStream for the
 * local platform and for tests: loopback only, file storage in a folder the
 * caller owns, stopped by PID.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startDaemon } from '../../lib/daemon.js';

export interface NatsServerHandle {
  url: string;
  port: number;
  pid: number;
  storeDir: string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on 127.0.0.1:port (readiness probes). */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startNatsServer(opts: { storeDir: string; port?: number; logFile?: string }): Promise<NatsServerHandle> {
  const port = opts.port ?? (await freePort());
  fs.mkdirSync(opts.storeDir, { recursive: true });
  const configFile = path.join(opts.storeDir, 'nats-server.conf');
  fs.writeFileSync(
    configFile,
    [
      `listen: 127.0.0.1:${port}`,
      // 8 MiB: a 6 MiB request body plus its base64 growth and the message envelope.
      'max_payload: 8388608',
      'jetstream {',
      `  store_dir: ${JSON.stringify(opts.storeDir)}`,
      '  max_memory_store: 256MB',
      '  max_file_store: 4GB',
      '}',
      '',
    ].join('\n'),
  );
  const daemon = await startDaemon({
    name: 'nats-server',
    command: 'nats-server',
    args: ['-c', configFile],
    ...(opts.logFile ? { logFile: opts.logFile } : {}),
    ready: () => canConnect(port),
    readyTimeoutMs: 15_000,
    pollMs: 20,
    stopGraceMs: 5000,
  });
  return { url: `nats://127.0.0.1:${port}`, port, pid: daemon.pid, storeDir: opts.storeDir, stop: () => daemon.stop() };
}
