/** Pure parts of the Xen driver: guest config, kernel command line, xl output parsing, console preamble. */
import { describe, expect, it } from 'vitest';
import { encodeFrame } from '../../contracts/frame.js';
import {
  ConsolePreamble,
  domainName,
  flagsToState,
  isNoSuchDomain,
  parseXlListJson,
  parseXlListText,
  renderXlConfig,
  validPrefix,
  xenKernelCommandLine,
} from '../../worker/driver/xl-config.js';
import { stderrTail } from '../../worker/driver/xl-run.js';

const base = { name: 'mayfly-w1-vm1', kernelPath: '/img/vmlinux', initrdPath: '/img/initrd.img', memoryMiB: 322, vcpus: 1, cmdline: xenKernelCommandLine() };

describe('xl guest config', () => {
  it('PVH by default shape: kernel, ramdisk, memory, vcpus, name, no devices, tsc_mode native', () => {
    const c = renderXlConfig({ ...base, type: 'pvh' });
    expect(c).toContain('type = "pvh"');
    expect(c).toContain('name = "mayfly-w1-vm1"');
    expect(c).toContain('kernel = "/img/vmlinux"');
    expect(c).toContain('ramdisk = "/img/initrd.img"');
    expect(c).toMatch(/^memory = 322$/m);
    expect(c).toMatch(/^maxmem = 322$/m);
    expect(c).toMatch(/^vcpus = 1$/m);
    expect(c).toContain('vif = []');
    expect(c).toContain('disk = []');
    expect(c).toContain('on_crash = "destroy"');
    expect(c).toContain('tsc_mode = "native"');
  });
  it('PV has no tsc_mode line', () => {
    const c = renderXlConfig({ ...base, type: 'pv' });
    expect(c).toContain('type = "pv"');
    expect(c).not.toContain('tsc_mode');
  });
  it('vCPU affinity: a cpus line only when set, xl syntax only', () => {
    expect(renderXlConfig({ ...base, type: 'pvh' })).not.toMatch(/^cpus/m);
    expect(renderXlConfig({ ...base, type: 'pvh', cpus: '1' })).toMatch(/^cpus = "1"$/m);
    expect(renderXlConfig({ ...base, type: 'pvh', cpus: '^0,2-3' })).toMatch(/^cpus = "\^0,2-3"$/m);
    expect(() => renderXlConfig({ ...base, type: 'pvh', cpus: '1" extra="x' })).toThrow(/invalid cpus/);
    expect(() => renderXlConfig({ ...base, type: 'pvh', cpus: '' })).toThrow(/invalid cpus/);
  });
  it('keeps kernel messages off hvc0 and appends extra args', () => {
    const cl = xenKernelCommandLine(['foo=1']);
    expect(cl).toMatch(/console=tty0/);
    expect(cl).toMatch(/quiet/);
    expect(cl).toMatch(/loglevel=0/);
    expect(cl.endsWith('foo=1')).toBe(true);
    expect(renderXlConfig({ ...base, type: 'pvh', cmdline: cl })).toContain(`extra = "${cl}"`);
  });
  it('rejects values that would break the config syntax and bad sizes', () => {
    expect(() => renderXlConfig({ ...base, type: 'pvh', kernelPath: '/a"b' })).toThrow(/not allowed/);
    expect(() => renderXlConfig({ ...base, type: 'pvh', cmdline: 'a\nb' })).toThrow(/not allowed/);
    expect(() => renderXlConfig({ ...base, type: 'pvh', memoryMiB: 0 })).toThrow(/memory/);
    expect(() => renderXlConfig({ ...base, type: 'pvh', vcpus: 0 })).toThrow(/vcpus/);
  });
  it('domain names: prefix + id, validated', () => {
    expect(domainName('mayfly-w1-', 'vm1')).toBe('mayfly-w1-vm1');
    expect(() => domainName('mayfly w1-', 'vm1')).toThrow();
    expect(validPrefix('mayfly-w1-')).toBe(true);
    expect(validPrefix('mayfly')).toBe(false);
  });
});

describe('xl output parsing', () => {
  it('xl list -l JSON: domid and name of every domain', () => {
    const json = JSON.stringify([
      { domid: 0, config: { c_info: { type: 'pv', name: 'Domain-0' } } },
      { domid: 7, config: { c_info: { type: 'pvh', name: 'mayfly-w1-vmabc' }, b_info: { max_memkb: 329728 } } },
      { domid: 8, config: {} },
    ]);
    expect(parseXlListJson(json)).toEqual([
      { domid: 0, name: 'Domain-0' },
      { domid: 7, name: 'mayfly-w1-vmabc' },
    ]);
    expect(parseXlListJson('')).toEqual([]);
    expect(parseXlListJson(JSON.stringify({ domid: 3, config: { c_info: { name: 'x' } } }))).toEqual([{ domid: 3, name: 'x' }]);
    expect(() => parseXlListJson('[{')).toThrow(/no valid JSON/);
  });
  it('xl list text: state flags', () => {
    const out = [
      'Name                                        ID   Mem VCPUs\tState\tTime(s)',
      'Domain-0                                     0  1024     1     r-----      46.3',
      'mayfly-w1-vma                                3   322     1     --p---       0.0',
      'mayfly-w1-vmb                                4   322     1     -b----       2.1',
    ].join('\n');
    const rows = parseXlListText(out);
    expect(rows.map((r) => [r.name, r.domid, r.state])).toEqual([
      ['Domain-0', 0, 'running'],
      ['mayfly-w1-vma', 3, 'paused'],
      ['mayfly-w1-vmb', 4, 'blocked'],
    ]);
    expect(flagsToState('---sc-')).toBe('crashed');
    expect(flagsToState('-----d')).toBe('dying');
    expect(flagsToState('------')).toBe('unknown');
  });
  it('recognises "no such domain" errors and keeps both ends of long stderr', () => {
    expect(isNoSuchDomain('xl: error: mayfly-x is an invalid domain identifier (rc=-6)')).toBe(true);
    expect(isNoSuchDomain('libxl: error: out of memory')).toBe(false);
    const long = `first line says why\n${'x'.repeat(3000)}\nlast line`;
    const t = stderrTail(long);
    expect(t.startsWith('first line says why')).toBe(true);
    expect(t.endsWith('last line')).toBe(true);
    expect(t.length).toBeLessThan(900);
  });
});

describe('console preamble', () => {
  const frame = encodeFrame({ type: 'ready', x: 1 });
  it('skips kernel noise before the first frame, then passes everything through', () => {
    const p = new ConsolePreamble(1 << 20);
    const noise = Buffer.from('[    0.1] Linux version 6.1 MF nonsense M\r\n');
    const out = p.push(Buffer.concat([noise, frame, Buffer.from('garbage')]));
    expect(out.equals(Buffer.concat([frame, Buffer.from('garbage')]))).toBe(true);
    expect(p.skipped).toBe(noise.length);
    // After the first frame, garbage is not skipped: the frame decoder must see it (a fault).
    expect(p.push(Buffer.from('noise')).toString()).toBe('noise');
  });
  it('finds a frame split across chunks, byte by byte', () => {
    const p = new ConsolePreamble(1 << 20);
    const all = Buffer.concat([Buffer.from('boot noise\n'), frame]);
    const got: Buffer[] = [];
    for (const b of all) got.push(p.push(Buffer.from([b])));
    expect(Buffer.concat(got).equals(frame)).toBe(true);
  });
  it('stops skipping after maxSkip bytes', () => {
    const p = new ConsolePreamble(1 << 20, 100);
    expect(p.push(Buffer.alloc(50, 0x41)).length).toBe(0);
    p.push(Buffer.alloc(60, 0x41));
    expect(p.inProtocol).toBe(true);
    expect(p.push(Buffer.from('x')).toString()).toBe('x');
  });
});
