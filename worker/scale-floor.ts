/**
 * Keeps each function's replica floor on this host (OpenFaaS's
 * `com.openfaas.scale.min` and scale-function, contracts/scale.ts): a watch on
 * the functions bucket tells the VM manager, for every function that asks for
 * ready VMs, how many to keep (VmManager.keepReady), and forgets the floor of
 * a function that was deleted or no longer asks. No call is needed first: the
 * function's snapshot is made when its floor appears.
 */
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { STORES } from '../contracts/bus.js';
import { functionRecordSchema, usesSnapshot, type FunctionRecord } from '../contracts/functions.js';
import { desiredReplicas } from '../contracts/scale.js';
import type { Logger } from '../lib/logger.js';
import type { FunctionSource, VmManager } from './vm-manager.js';

export async function watchReplicaFloors(
  nc: NatsConnection,
  manager: Pick<VmManager, 'keepReady' | 'clearReady'>,
  sourceOf: (fn: FunctionRecord) => Promise<FunctionSource | null>,
  log: Logger,
): Promise<{ stop(): void }> {
  const kv = await new Kvm(nc).create(STORES.functions, { history: 1 });
  const floored = new Set<string>();
  let stopped = false;
  let watcher: { stop(): void } | null = null;
  const apply = async (key: string, fn: FunctionRecord | null): Promise<void> => {
    const n = fn ? desiredReplicas(fn) : undefined;
    if (!fn || n === undefined) {
      if (floored.delete(key)) manager.clearReady(key);
      return;
    }
    floored.add(key);
    if (n > 0 && !usesSnapshot(fn)) {
      log.warn({ fn: fn.name, replicas: n }, 'ready replicas need function snapshots, which functions with secrets (or com.mayfly.snapshot=false) do not use: none kept');
      manager.keepReady(fn, null, n);
      return;
    }
    const source = n > 0 ? await sourceOf(fn).catch(() => null) : null;
    if (n > 0 && !source) log.warn({ fn: fn.name }, 'could not fetch the function to keep ready VMs of it');
    manager.keepReady(fn, source, n);
  };
  const run = async (): Promise<void> => {
    const it = await kv.watch();
    watcher = it;
    for await (const e of it) {
      let fn: FunctionRecord | null = null;
      if (e.operation === 'PUT') {
        const parsed = functionRecordSchema.safeParse(e.json());
        fn = parsed.success ? parsed.data : null;
      }
      await apply(e.key, fn).catch((err: unknown) => log.warn({ err, fn: e.key }, 'replica floor not applied'));
    }
  };
  const loop = (): void => {
    void run()
      .catch(() => {})
      .finally(() => {
        if (!stopped) setTimeout(loop, 1000).unref();
      });
  };
  loop();
  return {
    stop() {
      stopped = true;
      watcher?.stop();
    },
  };
}
