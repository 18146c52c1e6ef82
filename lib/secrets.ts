/**
 * Function secrets (OpenFaaS shape: {name, value}) in a JetStream KV bucket,
 * encrypted at rest with AES-256-GCM under the operator's key (the secret's
 * name is authenticated data, so a value cannot be moved to another name).
 * Values are never listed or logged; a worker decrypts only the secrets the
 * spec of the function it is about to run lists, and sends them to that VM only.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { z } from 'zod';
import { STORES } from '../contracts/bus.js';
import { kvKeys } from './kv-keys.js';
import { kvReplicas } from './js-replicas.js';

export const secretNameSchema = z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,62})$/, 'must be 1 to 63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit');
export const MAX_SECRET_BYTES = 64 * 1024;
export const secretSchema = z.strictObject({
  name: secretNameSchema,
  value: z.string().refine((v) => Buffer.byteLength(v) <= MAX_SECRET_BYTES, `must be at most ${MAX_SECRET_BYTES} bytes`),
});

const sealedSchema = z.object({ iv: z.string(), tag: z.string(), data: z.string(), createdAt: z.string(), updatedAt: z.string() });

export class SecretError extends Error {
  constructor(
    readonly code: 'NOT_FOUND' | 'ALREADY_EXISTS',
    message: string,
  ) {
    super(message);
    this.name = 'SecretError';
  }
}

export class SecretStore {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly key: Buffer,
  ) {}

  static async open(nc: NatsConnection, key: Buffer): Promise<SecretStore> {
    return new SecretStore(nc, await new Kvm(nc).create(STORES.secrets, { history: 1, ...kvReplicas(nc) }), key);
  }

  private seal(name: string, value: string, createdAt: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    c.setAAD(Buffer.from(name));
    const data = Buffer.concat([c.update(value, 'utf8'), c.final()]);
    return JSON.stringify({
      iv: iv.toString('base64'),
      tag: c.getAuthTag().toString('base64'),
      data: data.toString('base64'),
      createdAt,
      updatedAt: new Date().toISOString(),
    });
  }

  private open(name: string, raw: unknown): string {
    const s = sealedSchema.parse(raw);
    const d = createDecipheriv('aes-256-gcm', this.key, Buffer.from(s.iv, 'base64'));
    d.setAAD(Buffer.from(name));
    d.setAuthTag(Buffer.from(s.tag, 'base64'));
    return Buffer.concat([d.update(Buffer.from(s.data, 'base64')), d.final()]).toString('utf8');
  }

  async create(name: string, value: string): Promise<void> {
    try {
      await this.kv.create(name, this.seal(name, value, new Date().toISOString()));
    } catch {
      if (await this.exists(name)) throw new SecretError('ALREADY_EXISTS', `secret "${name}" already exists; update it with PUT`);
      throw new Error(`could not store secret "${name}"`);
    }
  }

  async update(name: string, value: string): Promise<void> {
    const e = await this.kv.get(name);
    if (e?.operation !== 'PUT') throw new SecretError('NOT_FOUND', `secret "${name}" not found`);
    const createdAt = sealedSchema.parse(e.json()).createdAt;
    await this.kv.update(name, this.seal(name, value, createdAt), e.revision);
  }

  async exists(name: string): Promise<boolean> {
    return (await this.kv.get(name))?.operation === 'PUT';
  }

  /** Names only: values never leave the store through the API. */
  async list(): Promise<Array<{ name: string; createdAt: string; updatedAt: string }>> {
    const out = [];
    for (const name of await kvKeys(this.nc, STORES.secrets)) {
      const e = await this.kv.get(name);
      if (e?.operation !== 'PUT') continue;
      const { createdAt, updatedAt } = sealedSchema.parse(e.json());
      out.push({ name, createdAt, updatedAt });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async remove(name: string): Promise<boolean> {
    if (!(await this.exists(name))) return false;
    await this.kv.delete(name);
    return true;
  }

  /** Decrypts the named secrets (for the worker). Throws SecretError NOT_FOUND naming the first missing one. */
  async reveal(names: string[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const name of names) {
      const e = await this.kv.get(name);
      if (e?.operation !== 'PUT') throw new SecretError('NOT_FOUND', `secret "${name}" does not exist`);
      out[name] = this.open(name, e.json());
    }
    return out;
  }
}
