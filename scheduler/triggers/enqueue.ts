/**
 * A trigger call into the durable async path: the record (`queued`, created
 * with compare-and-set), then the async work queue with Nats-Msg-Id = call id.
 * Idempotent: a message mapped again or a tick fired by several replicas makes
 * one record and one queued call.
 */
import type { AsyncCall } from '../../contracts/bus.js';
import type { AsyncPublisher } from '../../lib/async-queue.js';
import { isFinal, newRecord, type CallRecords } from '../../lib/call-records.js';

/** Queues a call unless its record says it is done; true when this call created the record. */
export async function enqueue(records: CallRecords, publisher: AsyncPublisher, call: AsyncCall): Promise<boolean> {
  const created = await records.create(newRecord(call));
  if (!created) {
    const existing = await records.get(call.callId);
    if (existing && isFinal(existing.status)) return false; // ran (or was cancelled) already
  }
  await publisher.publish(call); // a repeated call id is dropped by the queue's duplicate window
  return created;
}

