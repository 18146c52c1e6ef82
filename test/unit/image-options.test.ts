/**
 * Which image the settings give: `auto` is the tinyx kernel, and falls back to
 * Debian's cloud kernel (saying why) only when tinyx cannot be built; an
 * explicit `tinyx` never falls back; a Xen worker gets Debian's kernel.
 * Uses the real builder and the images the global setup put in the cache.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/config.js';
import type { ImageProgress } from '../../functions/image/build.js';
import { ensureConfiguredImage, imageOptions } from '../../functions/image/image-options.js';
import { MICROVM_FRAGMENT, SHIPPED_CONFIG, XEN_FRAGMENT } from '../../functions/image/kernel-build.js';

const broken = { MAYFLY_TINYX_CONFIG: '/nonexistent/mayfly-test.config' };

describe('image settings', () => {
  it('maps every image setting to the builder options', () => {
    const config = loadConfig({ ...process.env, MAYFLY_IMAGE_COMPRESSION: 'zstd', MAYFLY_IMAGE_RUNTIMES: 'python3, binary:/bin/true', MAYFLY_GUEST_KERNEL: 'auto' });
    const o = imageOptions(config);
    expect(o).toMatchObject({ kernel: 'tinyx', compression: 'zstd', runtimes: ['python3', 'binary:/bin/true'], cacheDir: config.MAYFLY_CACHE_DIR });
    expect(imageOptions(config, { kernel: 'debian' }).kernel).toBe('debian');
    expect(o.tinyxConfig).toEqual({ kind: 'config', path: SHIPPED_CONFIG });
    // A Xen worker asking for tinyx gets the Xen guest fragment on top of the microvm one.
    const xen = imageOptions(loadConfig({ ...process.env, MAYFLY_DRIVER: 'xen', MAYFLY_GUEST_KERNEL: 'tinyx' }));
    expect(xen.tinyxConfig).toEqual({ kind: 'tinyconfig', fragments: [MICROVM_FRAGMENT, XEN_FRAGMENT] });
    expect(() => loadConfig({ MAYFLY_IMAGE_RUNTIMES: 'ruby' })).toThrow(/python3 or binary/);
    expect(() => loadConfig({ MAYFLY_IMAGE_RUNTIMES: 'binary:relative/path' })).toThrow(/python3 or binary/);
  });

  it('auto falls back to Debian when the tinyx kernel cannot be built, and says why', async () => {
    const events: ImageProgress[] = [];
    const img = await ensureConfiguredImage(loadConfig({ ...process.env, ...broken, MAYFLY_GUEST_KERNEL: 'auto' }), { onProgress: (p) => events.push(p) });
    expect(img.kernelKind).toBe('debian');
    expect(events.map((e) => e.detail ?? '').join('\n')).toMatch(/tinyx kernel could not be built \(.*nonexistent.*\); falling back to Debian/);
  });

  it('an explicit tinyx never falls back', async () => {
    await expect(ensureConfiguredImage(loadConfig({ ...process.env, ...broken, MAYFLY_GUEST_KERNEL: 'tinyx' }))).rejects.toThrow(/nonexistent/);
  });

  it('a Xen worker gets Debian kernel under auto (the tinyx config has no Xen guest support)', async () => {
    const img = await ensureConfiguredImage(loadConfig({ ...process.env, MAYFLY_GUEST_KERNEL: 'auto', MAYFLY_DRIVER: 'xen' }));
    expect(img.kernelKind).toBe('debian');
  });
});
