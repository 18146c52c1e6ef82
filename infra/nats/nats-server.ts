/**
 * Starts and stops a nats-server (Debian's package) with JetStream for the
 * local platform and for tests: loopback only, file storage in a folder the
 * caller owns, stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

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

function canConnect(port: number): Promise<boolean> {
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
  const out = opts.logFile ? fs.openSync(opts.logFile, 'a') : 'ignore';
  const proc: ChildProcess = spawn('nats-server', ['-c', configFile], { stdio: ['ignore', out, out] });
  if (typeof out === 'number') fs.closeSync(out);
  let exited = false;
  const exitedP = new Promise<void>((r) =>
    proc.once('exit', () => {
      exited = true;
      r();
    }),
  );
  proc.once('error', () => {
    exited = true;
  });
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (exited) throw new Error(`nats-server exited at start (see ${opts.logFile ?? 'its output'})`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error('nats-server did not listen within 15 s');
    }
    await sleep(20);
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: proc.pid!,
    storeDir: opts.storeDir,
    async stop() {
      if (exited) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exitedP;
      clearTimeout(timer);
    },
  };
}
