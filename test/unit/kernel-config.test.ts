/** Kconfig text handling of the tinyx kernel builder: parse, set, hash, diff, fragment checks. */
import { describe, expect, it } from 'vitest';
import { initScript } from '../../functions/image/build.js';
import {
  configHash,
  diffConfigs,
  fragmentMismatches,
  microvmNeeds,
  normalizeConfig,
  optionName,
  optionValue,
  parseKconfig,
  setOptions,
} from '../../functions/image/kernel-build.js';
import { parseCandidates } from '../../functions/image/kernel-minimize.js';

const CONFIG = `#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.192 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_64BIT=y
# CONFIG_SMP is not set
CONFIG_AIO=y
CONFIG_LOCALVERSION="-tinyx"
CONFIG_LOG_BUF_SHIFT=17
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y
`;

describe('kconfig text', () => {
  it('parses set, string, numeric and "is not set" lines', () => {
    const m = parseKconfig(CONFIG);
    expect(m.get('CONFIG_64BIT')).toBe('y');
    expect(m.get('CONFIG_SMP')).toBe('n');
    expect(m.get('CONFIG_LOCALVERSION')).toBe('"-tinyx"');
    expect(m.get('CONFIG_LOG_BUF_SHIFT')).toBe('17');
    expect(optionValue(CONFIG, 'ACPI')).toBe('n'); // absent = off
    expect(optionValue(CONFIG, 'AIO')).toBe('y');
  });

  it('sets options in place and appends new ones', () => {
    const out = setOptions(CONFIG, { AIO: 'n', CONFIG_SMP: 'y', FHANDLE: 'y' });
    expect(out).toContain('# CONFIG_AIO is not set\n');
    expect(out).not.toContain('CONFIG_AIO=y');
    expect(out).toContain('CONFIG_SMP=y\n');
    expect(out.trimEnd().endsWith('CONFIG_FHANDLE=y')).toBe(true);
    // order of the existing lines is kept
    expect(out.indexOf('CONFIG_SMP=y')).toBeLessThan(out.indexOf('# CONFIG_AIO is not set'));
  });

  it('hashes only the option lines (the header date and comments do not change the key)', () => {
    const other = CONFIG.replace('6.1.192 Kernel Configuration', 'whatever') + '\n# a comment\n\n';
    expect(configHash(other)).toBe(configHash(CONFIG));
    expect(configHash(setOptions(CONFIG, { AIO: 'n' }))).not.toBe(configHash(CONFIG));
    expect(normalizeConfig(CONFIG).split('\n')[0]).toBe('CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"');
  });

  it('diffs two configs and finds fragment values Kconfig refused', () => {
    const after = setOptions(CONFIG, { AIO: 'n', VIRTIO_MMIO_CMDLINE_DEVICES: 'n' });
    expect(Object.fromEntries(diffConfigs(CONFIG, after))).toEqual({
      CONFIG_AIO: ['y', 'n'],
      CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES: ['y', 'n'],
    });
    expect(fragmentMismatches('CONFIG_AIO=y\n# CONFIG_SMP is not set\nCONFIG_PVH=y\n', CONFIG)).toEqual(['CONFIG_PVH: wanted y, got n']);
  });

  it('asks QEMU microvm for acpi=off only when the kernel has no ACPI (ioapic2 would hide the virtio IRQ)', () => {
    expect(microvmNeeds(CONFIG)).toEqual({ machineOptions: ['acpi=off'], bootArgs: [] });
    expect(microvmNeeds(setOptions(CONFIG, { ACPI: 'y' }))).toEqual({ machineOptions: [], bootArgs: [] });
  });

  it('normalizes option names and candidate lists', () => {
    expect(optionName('aio'.toUpperCase())).toBe('CONFIG_AIO');
    expect(optionName('CONFIG_AIO=y')).toBe('CONFIG_AIO');
    expect(() => optionName('rm -rf /')).toThrow(/not a Kconfig option/);
    expect(parseCandidates('AIO, FHANDLE\n# comment\nCONFIG_RSEQ  AIO\n')).toEqual(['CONFIG_AIO', 'CONFIG_FHANDLE', 'CONFIG_RSEQ']);
  });
});

describe('/init without modules (tinyx: virtio console built in)', () => {
  it('has no insmod loop, and the Debian variant keeps it', () => {
    expect(initScript([])).not.toContain('insmod');
    expect(initScript([])).toContain('exec 3<>/dev/hvc0');
    // without ACPI, poweroff only halts: the tinyx init ends the VM with a reboot (QEMU -no-reboot)
    expect(initScript([], { end: 'reboot' })).toContain('/bin/busybox reboot -f');
    expect(initScript(['virtio'])).toContain('/bin/busybox poweroff -f');
    expect(initScript(['virtio_ring', 'virtio'])).toContain('for m in virtio_ring virtio; do /bin/busybox insmod /lib/modules/$m.ko; done\n# the console');
  });
});
