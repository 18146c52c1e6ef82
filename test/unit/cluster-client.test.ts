/**
 * The cluster-aware client parts without a bus: HostWatch (a host is lost one
 * TTL after its last heartbeat), MAYFLY_NATS_URL with several servers, the
 * worker's cut-off switch, and BusProbe's answer to a connection that stalls.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { NatsConnection } from '@nats-io/transport-node';
import { HostWatch } from '../../lib/host-watch.js';
import { natsServers } from '../../lib/nats.js';
import { BusProbe, PROBE_MS } from '../../lib/bus-probe.js';
import { jsReplicas, setJsReplicas } from '../../lib/js-replicas.js';
import { watchBusCutoff } from '../../worker/bus-cutoff.js';
import { loadConfig } from '../../contracts/config.js';

afterEach(() => {
  vi.useRealTimers();
});

const silentLog = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} } as never;

describe('HostWatch', () => {
  it('settles whenLost one TTL after the last heartbeat, not before', async () => {
    vi.useFakeTimers();
    const w = new HostWatch(5000);
    w.saw('h1');
    let lost: string | null = null;
    const watch = w.whenLost('h1');
    void watch.promise.then((h) => (lost = h));
    for (let t = 0; t < 4; t++) {
      await vi.advanceTimersByTimeAsync(1000);
      w.saw('h1'); // beating every second
    }
    await vi.advanceTimersByTimeAsync(4900);
    expect(lost).toBeNull();
    expect(w.alive('h1')).toBe(true);
    await vi.advanceTimersByTimeAsync(1500); // TTL passed; the check runs every TTL/4 at most 1 s
    expect(lost).toBe('h1');
    expect(w.alive('h1')).toBe(false);
    expect(w.watching()).toBe(0);
    w.stop();
  });

  it('gives a host it never heard of one TTL of grace; cancel stops the watch', async () => {
    vi.useFakeTimers();
    const w = new HostWatch(2000);
    let lost = false;
    void w.whenLost('never').promise.then(() => (lost = true));
    const other = w.whenLost('other');
    let otherLost = false;
    void other.promise.then(() => (otherLost = true));
    other.cancel();
    await vi.advanceTimersByTimeAsync(1500);
    expect(lost).toBe(false);
    await vi.advanceTimersByTimeAsync(1200);
    expect(lost).toBe(true);
    expect(otherLost).toBe(false);
    w.stop();
  });

  it('judges no host while its own bus is away, and adds that time to every host when back', async () => {
    vi.useFakeTimers();
    let own = 0;
    const w = new HostWatch(2000, undefined, { ownBusLostForMs: () => own });
    w.saw('h');
    let lost = false;
    void w.whenLost('h').promise.then(() => (lost = true));
    own = 1600; // our own connection went silent: no heartbeats reach us
    await vi.advanceTimersByTimeAsync(8000);
    expect(lost).toBe(false);
    own = 0; // back: the host gets the time we were away
    await vi.advanceTimersByTimeAsync(1000);
    expect(lost).toBe(false);
    await vi.advanceTimersByTimeAsync(4000); // and is lost if it still does not beat
    expect(lost).toBe(true);
    w.stop();
  });

  it('answers at once for a known host already past its TTL', async () => {
    vi.useFakeTimers();
    const w = new HostWatch(1000);
    w.saw('old');
    await vi.advanceTimersByTimeAsync(3000);
    let lost = false;
    void w.whenLost('old').promise.then(() => (lost = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(lost).toBe(true);
    w.stop();
  });
});

describe('MAYFLY_NATS_URL', () => {
  it('takes one or several servers, comma- or space-separated', () => {
    expect(natsServers('nats://127.0.0.1:4222')).toEqual(['nats://127.0.0.1:4222']);
    expect(natsServers('nats://10.0.0.1:4222, nats://10.0.0.2:4222,nats://10.0.0.3:4222')).toEqual([
      'nats://10.0.0.1:4222',
      'nats://10.0.0.2:4222',
      'nats://10.0.0.3:4222',
    ]);
    expect(() => natsServers(' , ')).toThrow(/names no server/);
  });

  it('cluster settings have laptop defaults and bounds', () => {
    const c = loadConfig({});
    expect(c.MAYFLY_JS_REPLICAS).toBe(1);
    expect(c.MAYFLY_BUS_LOST_MS).toBe(5000);
    expect(loadConfig({ MAYFLY_JS_REPLICAS: '3' }).MAYFLY_JS_REPLICAS).toBe(3);
    expect(() => loadConfig({ MAYFLY_JS_REPLICAS: '7' })).toThrow(/MAYFLY_JS_REPLICAS/);
  });

  it('replicas are remembered per connection, 1 for a connection it did not make', () => {
    const a = {} as NatsConnection;
    const b = {} as NatsConnection;
    setJsReplicas(a, 3);
    expect(jsReplicas(a)).toBe(3);
    expect(jsReplicas(b)).toBe(1);
  });
});

describe('BusProbe and the worker cut-off', () => {
  it('counts the time since the server last answered; a stalled flush makes it grow', async () => {
    vi.useFakeTimers();
    let answer = true;
    const pending: Array<() => void> = [];
    const nc = {
      isClosed: () => false,
      flush: () => (answer ? Promise.resolve() : new Promise<void>((r) => pending.push(r))),
    } as unknown as NatsConnection;
    const probe = new BusProbe(nc);
    await vi.advanceTimersByTimeAsync(3 * PROBE_MS);
    expect(probe.lostForMs()).toBeLessThanOrEqual(PROBE_MS);
    answer = false; // the connection stalls: pings go unanswered
    await vi.advanceTimersByTimeAsync(6000);
    expect(probe.lostForMs()).toBeGreaterThanOrEqual(5500);
    for (const r of pending.splice(0)) r(); // it answers again
    await vi.advanceTimersByTimeAsync(0);
    expect(probe.lostForMs()).toBe(0);
    probe.stop();
  });

  it('cuts off once past the limit (ending calls once), and admits again when the bus answers', async () => {
    vi.useFakeTimers();
    let lost = 0;
    const cuts: number[] = [];
    const c = watchBusCutoff({ probe: { lostForMs: () => lost }, limitMs: 5000, onCut: (ms) => cuts.push(ms), log: silentLog, checkMs: 100 });
    lost = 4000;
    await vi.advanceTimersByTimeAsync(300);
    expect(c.cut).toBe(false);
    lost = 5200;
    await vi.advanceTimersByTimeAsync(300);
    expect(c.cut).toBe(true);
    lost = 9000;
    await vi.advanceTimersByTimeAsync(300);
    expect(cuts).toEqual([5200]);
    lost = 100;
    await vi.advanceTimersByTimeAsync(300);
    expect(c.cut).toBe(false);
    c.stop();
  });
});

describe('RecentResults (a worker sends again what a gateway lost)', () => {
  it('sends again a finished sync result and the acceptance of a running call, nothing else', async () => {
    const { RecentResults } = await import('../../worker/recent-results.js');
    const sent: Array<[string, string]> = [];
    const nc = {
      status: () => ({ [Symbol.asyncIterator]: () => ({ next: () => new Promise(() => {}) }) }),
      subscribe: () => ({ unsubscribe: () => {} }),
      publish: (subject: string, data: Uint8Array) => sent.push([subject, new TextDecoder().decode(data)]),
    } as unknown as NatsConnection;
    let now = 1_000_000;
    const r = new RecentResults(nc, 'h1', () => now);
    r.started('done', 'acc.1');
    r.finished('done', '_INBOX.x.1', new TextEncoder().encode('{"callId":"done"}'));
    r.started('running', 'acc.2');
    r.started('async', undefined);
    r.finished('async'); // async results live in JetStream, not here
    expect(r.resend(['done', 'running', 'async', 'unknown'])).toBe(2);
    expect(sent).toEqual([
      ['_INBOX.x.1', '{"callId":"done"}'],
      ['acc.2', '{"callId":"running","hostId":"h1"}'],
    ]);
    r.finished('later', '_INBOX.x.2', new TextEncoder().encode('{"callId":"later"}'));
    now += 9000;
    sent.length = 0;
    expect(r.resendRecent()).toBe(3); // after its own reconnect: results of the last 10 s, acceptances of running calls
    expect(sent.map(([subject]) => subject).sort()).toEqual(['_INBOX.x.1', '_INBOX.x.2', 'acc.2']);
    now += 52_000; // kept for a minute
    sent.length = 0;
    expect(r.resend(['done'])).toBe(0);
    r.stop();
  });
});
