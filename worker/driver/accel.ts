/**
 * Picks QEMU's accelerator. `auto` means KVM when /dev/kvm can be opened AND a
 * probe VM boots under it to the agent's `ready`: a /dev/kvm that opens is not
 * proof that KVM works (in some sandboxes it exists but fails on the first
 * emulated instruction). The verdict is cached per host boot (whether KVM works
 * is the host's property, not the guest kernel's: switching images, e.g. to the
 * tinyx kernel, must not cost another probe), so the probe runs once per machine boot.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Accel } from './qemu.js';

export function kvmDeviceUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function bootId(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/**
 * @param kernelKey the kernel the probe boots (recorded with the verdict, for operators).
 * @param probe boots a VM under KVM and resolves true when its agent answered.
 */
export async function resolveAccel(
  mode: 'auto' | Accel,
  cacheDir: string,
  kernelKey: string,
  probe: () => Promise<boolean>,
): Promise<{ accel: Accel; why: string }> {
  if (mode !== 'auto') return { accel: mode, why: `MAYFLY_ACCEL=${mode}` };
  if (!kvmDeviceUsable()) return { accel: 'tcg', why: '/dev/kvm is not available' };
  const file = path.join(cacheDir, 'accel-probe.json');
  const key = bootId();
  try {
    const cached = JSON.parse(await fsp.readFile(file, 'utf8')) as { key: string; kvmWorks: boolean };
    if (cached.key === key) {
      return cached.kvmWorks
        ? { accel: 'kvm', why: 'KVM probe passed (cached)' }
        : { accel: 'tcg', why: '/dev/kvm exists but a probe VM failed under KVM (cached)' };
    }
  } catch {
    // no verdict yet
  }
  const kvmWorks = await probe().catch(() => false);
  await fsp.mkdir(cacheDir, { recursive: true });
  await fsp.writeFile(file, JSON.stringify({ key, kvmWorks, probedWith: kernelKey, at: new Date().toISOString() }));
  return kvmWorks
    ? { accel: 'kvm', why: 'KVM probe passed' }
    : { accel: 'tcg', why: '/dev/kvm exists but a probe VM failed under KVM' };
}
