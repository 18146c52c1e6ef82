/**
 * Where the client finds the gateway and its credentials.
 * Gateway: --gateway, then MAYFLY_GATEWAY, then the stack file's provider.gateway,
 * then http://127.0.0.1:<MAYFLY_PORT or 8080>.
 * Credentials, first found: --token / MAYFLY_TOKEN (API token, Bearer);
 * MAYFLY_PASSWORD (with MAYFLY_USER, default admin); what `mayfly login` saved for
 * that gateway (<config dir>/mayfly/credentials.json, mode 0600); and for a gateway
 * on this machine, the admin password `npm start` generated into its data dir
 * (MAYFLY_ADMIN_PASSWORD / MAYFLY_ADMIN_PASSWORD_FILE / <MAYFLY_DATA_DIR>/admin-password).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { loadConfig } from '../../contracts/config.js';

export type Credentials = { kind: 'basic'; user: string; password: string; source: string } | { kind: 'token'; token: string; source: string };

const savedSchema = z.object({
  gateways: z.record(
    z.string(),
    z.union([
      z.object({ user: z.string(), password: z.string() }),
      z.object({ token: z.string() }),
    ]),
  ),
});
type Saved = z.infer<typeof savedSchema>;

export function credentialsFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'mayfly', 'credentials.json');
}

export function normalizeGateway(url: string): string {
  let u: URL;
  try {
    u = new URL(/^https?:\/\//.test(url) ? url : `http://${url}`);
  } catch {
    throw new Error(`"${url}" is not a gateway URL (e.g. http://127.0.0.1:8080)`);
  }
  return u.origin;
}

export function resolveGateway(flag: string | undefined, stackGateway: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return normalizeGateway(flag);
  if (env.MAYFLY_GATEWAY) return normalizeGateway(env.MAYFLY_GATEWAY);
  if (stackGateway) return normalizeGateway(stackGateway);
  return `http://127.0.0.1:${env.MAYFLY_PORT || 8080}`;
}

function readSaved(env: NodeJS.ProcessEnv): Saved {
  const file = credentialsFile(env);
  if (!fs.existsSync(file)) return { gateways: {} };
  const parsed = savedSchema.safeParse(JSON.parse(fs.readFileSync(file, 'utf8')));
  if (!parsed.success) throw new Error(`${file} is not a Mayfly credentials file; delete it and run mayfly login again`);
  return parsed.data;
}

/** Saves credentials for `gateway` with mode 0600 (the folder 0700). Returns the file. */
export function saveCredentials(gateway: string, creds: { user: string; password: string } | { token: string }, env: NodeJS.ProcessEnv = process.env): string {
  const file = credentialsFile(env);
  const saved = readSaved(env);
  saved.gateways[gateway] = creds;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(saved, null, 2) + '\n', { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
  return file;
}

function isLoopback(gateway: string): boolean {
  const host = new URL(gateway).hostname;
  return host === '127.0.0.1' || host === 'localhost' || host === '[::1]' || host.startsWith('127.');
}

/** The admin password of a platform started on this machine (npm start), when readable. */
export function localAdminPassword(env: NodeJS.ProcessEnv = process.env): { password: string; source: string } | null {
  let config;
  try {
    config = loadConfig(env);
  } catch {
    return null;
  }
  if (config.MAYFLY_ADMIN_PASSWORD) return { password: config.MAYFLY_ADMIN_PASSWORD, source: 'MAYFLY_ADMIN_PASSWORD' };
  const file = config.MAYFLY_ADMIN_PASSWORD_FILE ?? path.join(config.MAYFLY_DATA_DIR, 'admin-password');
  try {
    return { password: fs.readFileSync(file, 'utf8').trim(), source: file };
  } catch {
    return null;
  }
}

export function resolveCredentials(gateway: string, tokenFlag: string | undefined, env: NodeJS.ProcessEnv = process.env): Credentials | null {
  const token = tokenFlag ?? env.MAYFLY_TOKEN;
  if (token) return { kind: 'token', token, source: tokenFlag ? '--token' : 'MAYFLY_TOKEN' };
  if (env.MAYFLY_PASSWORD) return { kind: 'basic', user: env.MAYFLY_USER || 'admin', password: env.MAYFLY_PASSWORD, source: 'MAYFLY_PASSWORD' };
  const saved = readSaved(env).gateways[gateway];
  if (saved && 'token' in saved) return { kind: 'token', token: saved.token, source: credentialsFile(env) };
  if (saved) return { kind: 'basic', user: saved.user, password: saved.password, source: credentialsFile(env) };
  if (isLoopback(gateway)) {
    const local = localAdminPassword(env);
    if (local) {
      let user = 'admin';
      try {
        user = loadConfig(env).MAYFLY_ADMIN_USER;
      } catch {
        // default
      }
      return { kind: 'basic', user, password: local.password, source: local.source };
    }
  }
  return null;
}
