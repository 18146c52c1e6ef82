/**
 * API tokens for the management API, in a JetStream KV bucket. A token is
 * `mf_<id>_<secret>`; only sha256(secret) is stored, under its id, so a leaked
 * bucket does not leak usable tokens. Revoking deletes the key: the next
 * request with that token is refused.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { z } from 'zod';
import { STORES } from '../contracts/bus.js';
import { kvKeys } from './kv-keys.js';
import { kvReplicas } from './js-replicas.js';

const tokenRecordSchema = z.object({ id: z.string(), name: z.string(), hash: z.string(), createdAt: z.string() });
export type TokenInfo = Omit<z.infer<typeof tokenRecordSchema>, 'hash'>;

const TOKEN_PATTERN = /^mf_([a-z0-9]{12})_([A-Za-z0-9_-]{32,64})$/;

export function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time equality of two strings (compared as sha256 digests, so lengths do not leak). */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

export class TokenStore {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
  ) {}

  static async open(nc: NatsConnection): Promise<TokenStore> {
    return new TokenStore(nc, await new Kvm(nc).create(STORES.tokens, { history: 1, ...kvReplicas(nc) }));
  }

  async create(name: string): Promise<TokenInfo & { token: string }> {
    const id = randomBytes(8).toString('hex').slice(0, 12);
    const secret = randomBytes(32).toString('base64url');
    const info = { id, name, createdAt: new Date().toISOString() };
    await this.kv.create(id, JSON.stringify({ ...info, hash: sha256(secret).toString('hex') }));
    return { ...info, token: `mf_${id}_${secret}` };
  }

  async list(): Promise<TokenInfo[]> {
    const out: TokenInfo[] = [];
    for (const id of await kvKeys(this.nc, STORES.tokens)) {
      const e = await this.kv.get(id);
      if (e?.operation !== 'PUT') continue;
      const { hash: _hash, ...info } = tokenRecordSchema.parse(e.json());
      out.push(info);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async revoke(id: string): Promise<boolean> {
    const e = await this.kv.get(id);
    if (e?.operation !== 'PUT') return false;
    await this.kv.delete(id);
    return true;
  }

  /** The token's info when it is valid (exists, not revoked, secret matches). */
  async verify(token: string): Promise<TokenInfo | null> {
    const m = TOKEN_PATTERN.exec(token);
    if (!m) return null;
    const e = await this.kv.get(m[1]!);
    if (e?.operation !== 'PUT') return null;
    const rec = tokenRecordSchema.parse(e.json());
    const ok = timingSafeEqual(Buffer.from(rec.hash, 'hex'), sha256(m[2]!));
    return ok ? { id: rec.id, name: rec.name, createdAt: rec.createdAt } : null;
  }
}
