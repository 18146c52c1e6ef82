/**
 * The file system a jailed QEMU sees: a skeleton root folder (made once per
 * worker) with the host's /usr read-only (QEMU, its libraries and firmware, and
 * the `sh`/`cat` its snapshot migration runs), /dev/null, /dev/urandom
 * (/dev/kvm under KVM), and, per VM, bind mounts of exactly its own files at
 * their host paths: the kernel, the initrd, its own socket folder and, for a
 * template or clone, that template's folder. No /proc, /sys, /home, /root,
 * /tmp or data folder. The mounts are made in the VM's own mount namespace
 * (`unshare --mount`), so the host sees none of them and they vanish with QEMU.
 *
 * All mounts of one VM are made by one `mount -a -T <fstab>` (one process): a
 * `mount` per path cost ~40 ms more per VM start here.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface BindMount {
  source: string;
  /** Read-only (a template's or the image's files), or writable (the VM's socket folder). */
  readOnly: boolean;
  /** A device node (/dev/null, /dev/kvm): mounted without `nodev`. */
  device?: boolean;
}

/** Paths go into an fstab and onto a command line: only plain absolute paths are accepted. */
export function checkPath(p: string): string {
  if (!path.isAbsolute(p) || !/^[A-Za-z0-9._+\-/@=,]+$/.test(p) || p.split('/').includes('..')) {
    throw new Error(`path "${p}" cannot be bind-mounted into a VM's jail: use an absolute path of letters, digits and ._+-@=, only`);
  }
  return path.normalize(p);
}

export function fstabLine(root: string, m: BindMount): string {
  const src = checkPath(m.source);
  return `${src} ${path.join(root, src)} none bind,nosuid${m.device ? '' : ',nodev'}${m.readOnly ? ',ro' : ''} 0 0`;
}

export class JailRoot {
  private constructor(readonly root: string) {}

  /** Makes the skeleton under `root` (removed by `remove`). `kvm`: bind /dev/kvm too. */
  static create(root: string, kvm: boolean): JailRoot {
    removeUnlessMounted(root);
    fs.mkdirSync(root, { recursive: true, mode: 0o755 });
    fs.chmodSync(root, 0o755);
    for (const d of ['usr', 'etc', 'dev']) fs.mkdirSync(path.join(root, d), { mode: 0o755 });
    // Debian's merged /usr: the usual top-level links.
    for (const l of ['bin', 'lib', 'lib64', 'sbin']) if (fs.existsSync(`/${l}`)) fs.symlinkSync(`usr/${l}`, path.join(root, l));
    const j = new JailRoot(root);
    for (const f of j.commonFiles(kvm)) if (f !== '/usr') j.mountPoint(f, false);
    j.common = j.commonFiles(kvm).map((source) => ({
      source,
      readOnly: source !== '/dev/null' && source !== '/dev/kvm',
      device: source.startsWith('/dev/'),
    }));
    return j;
  }

  private common: BindMount[] = [];

  private commonFiles(kvm: boolean): string[] {
    return ['/usr', '/etc/ld.so.cache', '/dev/null', '/dev/urandom', ...(kvm ? ['/dev/kvm'] : [])].filter((f) => fs.existsSync(f));
  }

  /** Makes the empty file or folder a bind mount of `source` goes on. */
  mountPoint(source: string, isDir: boolean): void {
    const target = path.join(this.root, checkPath(source));
    if (isDir) {
      fs.mkdirSync(target, { recursive: true, mode: 0o755 });
    } else if (!fs.existsSync(target)) {
      fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
      fs.writeFileSync(target, '', { mode: 0o644 });
    }
  }

  /** The fstab of one VM: the skeleton's mounts and its own. */
  fstab(own: BindMount[]): string {
    return [...this.common, ...own].map((m) => fstabLine(this.root, m)).join('\n') + '\n';
  }

  /** Removes a per-VM mount point folder (nothing is mounted on it outside the VM's namespace). */
  removeMountPoint(source: string): void {
    try {
      fs.rmdirSync(path.join(this.root, source));
    } catch {
      // not empty or gone
    }
  }

  remove(): void {
    removeUnlessMounted(this.root);
  }
}

/**
 * Removes a skeleton, but never recurses into a mount (a bind of /usr seen here
 * would be emptied): the VMs' mounts live in their own namespaces, so none
 * should be visible from the worker; if one is, the skeleton is left in place.
 */
function removeUnlessMounted(root: string): void {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  if (mounts.split('\n').some((l) => (l.split(' ')[4] ?? '').startsWith(`${root}/`))) {
    throw new Error(`${root} has mounts visible to the worker; not removing it`);
  }
  fs.rmSync(root, { recursive: true, force: true });
}
