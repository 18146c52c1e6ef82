import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../contracts/config.js';
import { parseCpio } from '../../functions/image/cpio.js';
import { ensureImage, formatImageReport, formatProgress, initScript, workerFile, type ImageProgress } from '../../functions/image/build.js';
import { cachedKernels, CONSOLE_MODULES } from '../../functions/image/kernel.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CACHE = loadConfig().MAYFLY_CACHE_DIR;
const DIST = path.join(ROOT, 'dist');

describe('guest image builder', () => {
  it('builds (or finds) the node image, then serves it from the cache', { timeout: 180_000 }, async () => {
    const first = await ensureImage({ cacheDir: CACHE, agentDir: DIST });
    const t0 = performance.now();
    const again = await ensureImage({ cacheDir: CACHE, agentDir: DIST });
    const cachedMs = performance.now() - t0;
    expect(again.builtNow).toBe(false);
    expect(again.imageId).toBe(first.imageId);
    expect(again.imageId).toMatch(/^[0-9a-f]{16,}$/);
    expect(cachedMs).toBeLessThan(5_000);
    expect(again.compression).toBe('lz4');
    expect(again.kernelRelease).toMatch(/^\d+\.\d+\.\d+-.*cloud-amd64$/);
    expect(path.isAbsolute(again.kernelPath) && path.isAbsolute(again.initrdPath)).toBe(true);
    expect(statSync(again.kernelPath).size).toBe(again.sizes.kernelBytes);
    expect(statSync(again.initrdPath).size).toBe(again.sizes.initrdBytes);
    expect(readFileSync(again.kernelPath).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    // legacy lz4 frame, the only lz4 flavour the kernel unpacks
    expect(readFileSync(again.initrdPath).subarray(0, 4).toString('hex')).toBe('02214c18');

    const lz = spawnSync('lz4', ['-dc', again.initrdPath], { maxBuffer: 1 << 30 });
    expect(lz.status).toBe(0);
    const cpio = lz.stdout as Buffer;
    expect(cpio.length).toBe(again.sizes.rootfsBytes);
    const entries = new Map(parseCpio(cpio).map((e) => [`/${e.name}`, e]));
    expect([...entries.keys()]).toEqual(again.files);
    const init = entries.get('/init')!;
    expect(init.mode).toBe(0o100755);
    expect(init.data.toString()).toContain('exec /usr/bin/node /mayfly/functions/agent/agent.js');
    expect(entries.get('/tmp')!.mode).toBe(0o041777);
    expect(entries.get('/dev/console')!.mode).toBe(0o020600);
    for (const d of ['/dev', '/proc', '/sys', '/var/task', '/etc']) expect(entries.get(d)!.mode).toBe(0o040755);
    for (const f of ['/bin/busybox', '/usr/bin/node', '/lib64/ld-linux-x86-64.so.2']) {
      expect(entries.get(f)!.mode).toBe(0o100755);
    }
    expect(again.files).toContain('/lib/x86_64-linux-gnu/libc.so.6');
    expect(again.files).toContain('/lib/x86_64-linux-gnu/libstdc++.so.6');
    for (const m of CONSOLE_MODULES) expect(entries.get(`/lib/modules/${m}.ko`)!.mode).toBe(0o100644);
    expect(entries.get('/mayfly/package.json')!.data.toString()).toBe('{"type":"module"}\n');
    // exactly the compiled agent and the frame codec, nothing else under /mayfly
    const agentJs = readdirSync(path.join(DIST, 'functions', 'agent')).filter((n) => n.endsWith('.js'));
    const shipped = again.files.filter((f) => f.startsWith('/mayfly/') && entries.get(f)!.mode === 0o100644).sort();
    expect(shipped).toEqual(
      [
        '/mayfly/contracts/frame.js',
        '/mayfly/package.json',
        ...agentJs.map((n) => `/mayfly/functions/agent/${n}`),
      ].sort(),
    );
    expect(formatImageReport(again)).toContain(again.imageId);
  });

  it('content-addresses inputs, reports progress and survives concurrent builders', { timeout: 180_000 }, async () => {
    // A unique stub agent makes a new image; 'none' keeps it quick.
    const agentDir = mkdtempSync(path.join(CACHE, 'test-agent-'));
    mkdirSync(path.join(agentDir, 'functions', 'agent'), { recursive: true });
    mkdirSync(path.join(agentDir, 'contracts'), { recursive: true });
    writeFileSync(path.join(agentDir, 'functions', 'agent', 'agent.js'), `// stub ${agentDir}\n`);
    writeFileSync(path.join(agentDir, 'functions', 'agent', 'agent.js.map'), '{}');
    writeFileSync(path.join(agentDir, 'contracts', 'frame.js'), 'export {};\n');
    const events: ImageProgress[] = [];
    let imageDir: string | undefined;
    try {
      const [a, b] = await Promise.all([
        ensureImage({ cacheDir: CACHE, agentDir, compression: 'none', onProgress: (p) => events.push(p) }),
        ensureImage({ cacheDir: CACHE, agentDir, compression: 'none' }),
      ]);
      imageDir = path.dirname(a.initrdPath);
      expect(b.imageId).toBe(a.imageId);
      expect(a.builtNow || b.builtNow).toBe(true);
      expect(a.sizes.initrdBytes).toBe(a.sizes.rootfsBytes);
      expect(a.files).toContain('/mayfly/functions/agent/agent.js');
      expect(a.files).not.toContain('/mayfly/functions/agent/agent.js.map');
      expect(readdirSync(path.join(CACHE, 'images')).filter((n) => n.startsWith(`.tmp-${a.imageId}`))).toEqual([]);
      const steps = new Set(events.map((e) => e.step));
      for (const s of ['resolve-kernel', 'resolve-libraries', 'hash', 'done']) expect(steps).toContain(s);
      if (a.builtNow) {
        const last = events.filter((e) => e.step === 'write-cpio').pop()!;
        expect(last.done).toBe(a.sizes.rootfsBytes);
        expect(last.total).toBe(a.sizes.rootfsBytes);
      }
      expect(events.map(formatProgress).every((l) => l.startsWith('image: '))).toBe(true);

      const c = await ensureImage({ cacheDir: CACHE, agentDir, compression: 'none' });
      expect(c.builtNow).toBe(false);
      expect(c.imageId).toBe(a.imageId);

      // one changed byte in a shipped file -> another image
      writeFileSync(path.join(agentDir, 'contracts', 'frame.js'), 'export {}; \n');
      const d = await ensureImage({ cacheDir: CACHE, agentDir, compression: 'none' });
      expect(d.imageId).not.toBe(a.imageId);
      rmSync(path.dirname(d.initrdPath), { recursive: true, force: true });
    } finally {
      rmSync(agentDir, { recursive: true, force: true });
      if (imageDir) rmSync(imageDir, { recursive: true, force: true });
    }
  });

  it('caches the kernel with the console modules in load order', async () => {
    const [k] = await cachedKernels(CACHE);
    expect(k).toBeDefined();
    expect(k!.modules.map((m) => m.name)).toEqual(['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_console']);
    expect(existsSync(k!.vmlinuxPath)).toBe(true);
  });

  it('writes the /init the guest protocol expects', () => {
    const s = initScript(['virtio_ring', 'virtio']);
    expect(s.startsWith('#!/bin/busybox sh\n')).toBe(true);
    expect(s).toContain('for m in virtio_ring virtio; do /bin/busybox insmod /lib/modules/$m.ko; done');
    expect(s).toContain('exec 3<>/dev/hvc0\n/bin/busybox stty -F /dev/hvc0 raw -echo\n');
    expect(s).toContain('MAYFLY_CHANNEL_FD=3');
    expect(s.trimEnd().endsWith('exec /usr/bin/node /mayfly/functions/agent/agent.js')).toBe(true);
    expect(workerFile().pathname.endsWith('/image-worker.js')).toBe(true);
  });
});
