/**
 * worker/oci-boot.ts: an image function's initramfs is the image's rootfs
 * archive followed by the runtime image's, written only after the fetched
 * bytes match their sha256, and cached by content.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BootImages } from '../../worker/oci-boot.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mf-oci-boot-'));
  fs.writeFileSync(path.join(dir, 'base.img'), Buffer.from('BASE-INITRD'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const rootfsOf = (data: Buffer) => ({
  reference: 'r/x:1@sha256:00',
  digest: 'sha256:00',
  object: 'rootfs-x',
  sha256: createHash('sha256').update(data).digest('hex'),
  bytes: data.length,
  unpackedBytes: 10 * 1024 * 1024,
});

describe('image boot initramfs', () => {
  it('joins the rootfs archive (padded to 4 bytes) and the runtime initramfs, once per content', async () => {
    const data = Buffer.from('ROOTFS-GZ');
    let fetches = 0;
    const boots = new BootImages(path.join(dir, 'cache'), { imageId: 'img1', initrdPath: path.join(dir, 'base.img') }, async () => {
      fetches++;
      return data;
    });
    const b = await boots.ensure(rootfsOf(data));
    expect(fs.readFileSync(b.initrdPath)).toEqual(Buffer.concat([data, Buffer.alloc(3), Buffer.from('BASE-INITRD')]));
    expect(b.extraMiB).toBeGreaterThanOrEqual(10);
    // A second worker process (a new BootImages) finds it on disk without fetching.
    const again = new BootImages(path.join(dir, 'cache'), { imageId: 'img1', initrdPath: path.join(dir, 'base.img') }, async () => {
      throw new Error('should not fetch');
    });
    expect((await again.ensure(rootfsOf(data))).initrdPath).toBe(b.initrdPath);
    expect(fetches).toBe(1);
  });

  it('refuses bytes that do not match their sha256 and writes nothing', async () => {
    const good = Buffer.from('ROOTFS-GZ');
    const boots = new BootImages(path.join(dir, 'cache'), { imageId: 'img1', initrdPath: path.join(dir, 'base.img') }, async () => Buffer.from('EVIL-BYTES'));
    await expect(boots.ensure(rootfsOf(good))).rejects.toThrow(/does not match its sha256/);
    const missing = new BootImages(path.join(dir, 'cache'), { imageId: 'img1', initrdPath: path.join(dir, 'base.img') }, async () => null);
    await expect(missing.ensure(rootfsOf(good))).rejects.toThrow(/not in the object store/);
    expect(fs.existsSync(path.join(dir, 'cache', 'oci-boot')) ? fs.readdirSync(path.join(dir, 'cache', 'oci-boot')) : []).toEqual([]);
  });
});
