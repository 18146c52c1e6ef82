/**
 * Functions in NATS: records in a JetStream KV bucket (key = function name),
 * code in the JetStream object store under its sha256, so every worker on any
 * host can fetch it. Creation and update use KV revisions, so two gateways
 * deploying at once cannot silently overwrite each other.
 */
import { createHash } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { STORES } from '../contracts/bus.js';
import {
  functionRecordSchema,
  parseMemoryMiB,
  parseTimeoutMs,
  type DeployRequest,
  type FunctionRecord,
} from '../contracts/functions.js';

import type { MayflyConfig } from '../contracts/config.js';
import { kvKeys } from './kv-keys.js';
import { jsReplicas, kvReplicas } from './js-replicas.js';

export interface FunctionLimits {
  defaultMemoryMiB: number;
  maxMemoryMiB: number;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  maxCodeBytes: number;
}

/** The operator's limits for function specs, from the configuration. */
export function functionLimits(config: MayflyConfig): FunctionLimits {
  return {
    defaultMemoryMiB: config.MAYFLY_DEFAULT_MEMORY_MB,
    maxMemoryMiB: config.MAYFLY_MAX_MEMORY_MB,
    defaultTimeoutMs: config.MAYFLY_DEFAULT_TIMEOUT_MS,
    maxTimeoutMs: config.MAYFLY_MAX_TIMEOUT_MS,
    // Source sent as `code` is held to MAYFLY_MAX_CODE_BYTES by the gateway; a bundle built from a package to MAYFLY_MAX_BUNDLE_BYTES.
    maxCodeBytes: Math.max(config.MAYFLY_MAX_CODE_BYTES, config.MAYFLY_MAX_BUNDLE_BYTES),
  };
}

/** A deploy the user can fix: maps to a 4xx. */
export class FunctionStoreError extends Error {
  constructor(
    readonly code: 'NOT_FOUND' | 'ALREADY_EXISTS' | 'INVALID' | 'CONFLICT',
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'FunctionStoreError';
  }
}

export function codeHash(code: string): string {
  return createHash('sha256').update(code).digest('hex');
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class FunctionStore {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly code: ObjectStore,
    private readonly limits: FunctionLimits,
  ) {}

  static async open(nc: NatsConnection, limits: FunctionLimits): Promise<FunctionStore> {
    const kv = await new Kvm(nc).create(STORES.functions, { history: 1, ...kvReplicas(nc) });
    const code = await new Objm(nc).create(STORES.code, { replicas: jsReplicas(nc) });
    return new FunctionStore(nc, kv, code, limits);
  }

  async get(name: string): Promise<FunctionRecord | null> {
    const e = await this.kv.get(name);
    if (!e || e.operation !== 'PUT') return null;
    return functionRecordSchema.parse(e.json());
  }

  async list(): Promise<FunctionRecord[]> {
    const names: string[] = [];
    names.push(...(await kvKeys(this.nc, STORES.functions)));
    const records = await Promise.all(names.sort().map((n) => this.get(n)));
    return records.filter((r): r is FunctionRecord => r !== null);
  }

  /** POST /system/functions: fails when the function exists. */
  async create(req: DeployRequest): Promise<FunctionRecord> {
    const now = new Date().toISOString();
    const record = await this.toRecord(req, { version: 1, createdAt: now, updatedAt: now });
    try {
      await this.kv.create(req.service, JSON.stringify(record));
    } catch (err) {
      if (await this.get(req.service)) {
        throw new FunctionStoreError('ALREADY_EXISTS', `function "${req.service}" already exists; update it with PUT`);
      }
      throw err;
    }
    return record;
  }

  /** PUT /system/functions: replaces the spec and code of an existing function, with a new version. */
  async update(req: DeployRequest): Promise<FunctionRecord> {
    const e = await this.kv.get(req.service);
    if (!e || e.operation !== 'PUT') throw new FunctionStoreError('NOT_FOUND', `function "${req.service}" not found`);
    const old = functionRecordSchema.parse(e.json());
    const record = await this.toRecord(req, {
      version: old.version + 1,
      createdAt: old.createdAt,
      updatedAt: new Date().toISOString(),
    });
    try {
      await this.kv.update(req.service, JSON.stringify(record), e.revision);
    } catch {
      throw new FunctionStoreError('CONFLICT', `function "${req.service}" was changed concurrently; retry the update`);
    }
    return record;
  }

  /** Sets `replicas` (POST /system/scale-function) without a new version: its VMs and snapshot stay valid. null: no such function. */
  async setReplicas(name: string, replicas: number): Promise<FunctionRecord | null> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const e = await this.kv.get(name);
      if (!e || e.operation !== 'PUT') return null;
      const record = { ...functionRecordSchema.parse(e.json()), replicas };
      try {
        await this.kv.update(name, JSON.stringify(record), e.revision);
        return record;
      } catch {
        // changed meanwhile (a deploy, another scale): read it again
      }
    }
    throw new FunctionStoreError('CONFLICT', `function "${name}" kept changing while it was scaled; retry`);
  }

  async remove(name: string): Promise<boolean> {
    if (!(await this.get(name))) return false;
    await this.kv.delete(name);
    // Code objects are content-addressed and may be shared by other functions: they stay.
    return true;
  }

  async getCode(hash: string): Promise<string | null> {
    const data = await this.code.getBlob(hash);
    return data ? dec.decode(data) : null;
  }

  /** An image function's root filesystem (gzip'd cpio), by object name; null when it is not stored. */
  async getRootfs(object: string): Promise<Uint8Array | null> {
    return this.code.getBlob(object);
  }

  private async toRecord(
    req: DeployRequest,
    meta: Pick<FunctionRecord, 'version' | 'createdAt' | 'updatedAt'>,
  ): Promise<FunctionRecord> {
    const l = this.limits;
    const bytes = Buffer.byteLength(req.code);
    if (bytes > l.maxCodeBytes) {
      throw new FunctionStoreError('INVALID', `code is ${bytes} bytes, above the limit of ${l.maxCodeBytes} bytes`, 'code');
    }
    const memoryMiB = req.limits?.memory !== undefined ? parseMemoryMiB(req.limits.memory) : l.defaultMemoryMiB;
    if (memoryMiB === null || memoryMiB < 64 || memoryMiB > l.maxMemoryMiB) {
      throw new FunctionStoreError(
        'INVALID',
        `limits.memory must be between 64Mi and ${l.maxMemoryMiB}Mi (e.g. "128Mi")`,
        'limits.memory',
      );
    }
    const timeoutMs = req.timeout !== undefined ? parseTimeoutMs(req.timeout) : l.defaultTimeoutMs;
    if (timeoutMs === null || timeoutMs > l.maxTimeoutMs) {
      throw new FunctionStoreError(
        'INVALID',
        `timeout must be a positive number of seconds or a duration like "30s", at most ${l.maxTimeoutMs / 1000}s`,
        'timeout',
      );
    }
    const hash = codeHash(req.code);
    if (!(await this.code.info(hash))) await this.code.putBlob({ name: hash }, enc.encode(req.code));
    // An image function's root filesystem: content-addressed like code, stored once per content.
    const { data: rootfsData, ...rootfs } = req.rootfs ?? { data: undefined };
    if (req.rootfs && !(await this.code.info(req.rootfs.object))) await this.code.putBlob({ name: req.rootfs.object }, rootfsData!);
    return {
      name: req.service,
      runtime: req.runtime,
      handler: req.handler,
      codeHash: hash,
      codeBytes: bytes,
      envVars: req.envVars ?? {},
      memoryMiB,
      timeoutMs,
      isolation: req.isolation,
      image: req.image ?? `mayfly/${req.runtime}`,
      labels: req.labels ?? {},
      annotations: req.annotations ?? {},
      secrets: [...new Set(req.secrets ?? [])],
      ...(req.rootfs ? { rootfs: rootfs as NonNullable<FunctionRecord['rootfs']>, envProcess: req.envProcess ?? '' } : {}),
      ...meta,
    };
  }
}
