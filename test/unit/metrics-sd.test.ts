/** The Prometheus file_sd targets file the scheduler writes (lib/prometheus-sd.ts). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { prometheusSdFile, renderTargets, targetGroup, TargetsFile } from '../../lib/prometheus-sd.js';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'mfsd-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('targetGroup', () => {
  it('turns a /metrics URL into a file_sd group with its path, scheme and Mayfly labels', () => {
    expect(targetGroup({ service: 'worker', id: 'w1', url: 'http://10.0.0.5:9464/metrics' })).toEqual({
      targets: ['10.0.0.5:9464'],
      labels: { __metrics_path__: '/metrics', __scheme__: 'http', service: 'worker', mayfly_id: 'w1' },
    });
    expect(targetGroup({ service: 'gateway', id: 'g', url: 'https://gw.example/x/metrics' })).toEqual({
      targets: ['gw.example:443'],
      labels: { __metrics_path__: '/x/metrics', __scheme__: 'https', service: 'gateway', mayfly_id: 'g' },
    });
    expect(targetGroup({ service: 'worker', id: 'v6', url: 'http://[::1]:81/metrics' })!.targets).toEqual(['[::1]:81']);
  });

  it('drops what Prometheus cannot scrape', () => {
    expect(targetGroup({ service: 'worker', id: 'w', url: 'not a url' })).toBeNull();
    expect(targetGroup({ service: 'worker', id: 'w', url: 'ftp://h/metrics' })).toBeNull();
  });
});

describe('renderTargets', () => {
  it('is stable: gateway, scheduler, workers, each by id, duplicates removed', () => {
    const text = renderTargets([
      { service: 'worker', id: 'w2', url: 'http://127.0.0.1:3/metrics' },
      { service: 'worker', id: 'w1', url: 'http://127.0.0.1:2/metrics' },
      { service: 'scheduler', id: 's', url: 'http://127.0.0.1:1/metrics' },
      { service: 'gateway', id: 'g', url: 'http://127.0.0.1:8080/metrics' },
      { service: 'worker', id: 'w1', url: 'http://127.0.0.1:2/metrics' },
      { service: 'worker', id: 'bad', url: '::' },
    ]);
    const groups = JSON.parse(text) as Array<{ targets: string[]; labels: Record<string, string> }>;
    expect(groups.map((g) => `${g.labels.service}/${g.labels.mayfly_id}@${g.targets[0]}`)).toEqual([
      'gateway/g@127.0.0.1:8080',
      'scheduler/s@127.0.0.1:1',
      'worker/w1@127.0.0.1:2',
      'worker/w2@127.0.0.1:3',
    ]);
    expect(text.endsWith('\n')).toBe(true);
    expect(renderTargets([])).toBe('[]\n');
  });
});

describe('TargetsFile', () => {
  it('writes the live targets, rewrites only on change, and drops targets past the TTL', async () => {
    const file = path.join(tmp(), 'nested', 'targets.json');
    const t = new TargetsFile(file, 1000);
    t.saw({ service: 'worker', id: 'w1', url: 'http://127.0.0.1:2/metrics' }, 0);
    t.saw({ service: 'gateway', id: 'g', url: 'http://127.0.0.1:1/metrics' }, 0);
    await t.sync(500);
    expect((JSON.parse(fs.readFileSync(file, 'utf8')) as unknown[]).length).toBe(2);

    // unchanged: not rewritten (the file's inode stays)
    const ino = fs.statSync(file).ino;
    await t.sync(600);
    expect(fs.statSync(file).ino).toBe(ino);

    // the worker's new address replaces its old one
    t.saw({ service: 'worker', id: 'w1', url: 'http://127.0.0.1:9/metrics' }, 900);
    await t.sync(900);
    expect(fs.readFileSync(file, 'utf8')).toContain('127.0.0.1:9');
    expect(fs.readFileSync(file, 'utf8')).not.toContain('127.0.0.1:2"');

    // the gateway was last seen at 0: gone after the TTL
    await t.sync(1500);
    const groups = JSON.parse(fs.readFileSync(file, 'utf8')) as Array<{ labels: { service: string } }>;
    expect(groups.map((g) => g.labels.service)).toEqual(['worker']);
    // no temporary files left behind
    expect(fs.readdirSync(path.dirname(file))).toEqual(['targets.json']);
  });

  it('tries again after a failed write', async () => {
    const dir = tmp();
    const blocker = path.join(dir, 'not-a-dir');
    fs.writeFileSync(blocker, 'x');
    const t = new TargetsFile(path.join(blocker, 'targets.json'), 10_000);
    t.saw({ service: 'worker', id: 'w', url: 'http://127.0.0.1:2/metrics' }, 0);
    await expect(t.sync(0)).rejects.toThrow();
    fs.rmSync(blocker);
    await t.sync(1);
    expect(fs.existsSync(path.join(blocker, 'targets.json'))).toBe(true);
  });

  it('repairs a file someone else changed or removed', async () => {
    const file = path.join(tmp(), 't.json');
    const t = new TargetsFile(file, 10_000);
    t.saw({ service: 'worker', id: 'w', url: 'http://127.0.0.1:2/metrics' }, 0);
    await t.sync(1);
    const good = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, '[]\n');
    await t.sync(2);
    expect(fs.readFileSync(file, 'utf8')).toBe(good);
    fs.rmSync(file);
    await t.sync(3);
    expect(fs.readFileSync(file, 'utf8')).toBe(good);
  });

  it('forget() removes a target at once', async () => {
    const file = path.join(tmp(), 't.json');
    const t = new TargetsFile(file, 10_000);
    t.saw({ service: 'scheduler', id: 's', url: 'http://127.0.0.1:2/metrics' }, 0);
    t.forget('scheduler', 's');
    await t.sync(1);
    expect(fs.readFileSync(file, 'utf8')).toBe('[]\n');
  });
});

describe('prometheusSdFile', () => {
  it('defaults to <data dir>/prometheus/targets.json, takes an explicit path, and can be turned off', () => {
    expect(prometheusSdFile({ MAYFLY_DATA_DIR: '/var/lib/mayfly', MAYFLY_PROMETHEUS_SD_FILE: undefined })).toBe('/var/lib/mayfly/prometheus/targets.json');
    expect(prometheusSdFile({ MAYFLY_DATA_DIR: '/d', MAYFLY_PROMETHEUS_SD_FILE: '/etc/prometheus/mayfly.json' })).toBe('/etc/prometheus/mayfly.json');
    expect(prometheusSdFile({ MAYFLY_DATA_DIR: '/d', MAYFLY_PROMETHEUS_SD_FILE: 'rel/t.json' })).toBe(path.resolve('rel/t.json'));
    expect(prometheusSdFile({ MAYFLY_DATA_DIR: '/d', MAYFLY_PROMETHEUS_SD_FILE: 'off' })).toBeNull();
  });
});
