/**
 * One uid per VM, from a range reserved for Mayfly. A uid is claimed host-wide
 * with a file created O_EXCL in a root-only folder (several workers may share a
 * host: the test platform runs two), holding the claiming worker's PID, and is
 * released when the VM's last process is gone. Claims of workers that died are
 * swept when a worker starts. Allocation goes round-robin, so a uid is reused as
 * late as possible.
 */
import fs from 'node:fs';
import path from 'node:path';

export class UidPool {
  private next = 0;

  constructor(
    private readonly dir: string,
    /** First uid of the range (the range's group, see JailerSettings.gid, is separate). */
    private readonly base: number,
    private readonly count: number,
    private readonly pid: number = process.pid,
  ) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.next = Math.floor(Math.random() * count);
  }

  /** Removes claims whose worker is gone (a killed worker could not release them). */
  sweep(): number {
    let removed = 0;
    for (const name of fs.readdirSync(this.dir)) {
      if (!/^\d+$/.test(name)) continue;
      const f = path.join(this.dir, name);
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(f, 'utf8'));
      } catch {
        continue;
      }
      if (owner === this.pid || alive(owner)) continue;
      fs.rmSync(f, { force: true });
      removed++;
    }
    return removed;
  }

  /** Claims a free uid; throws when the whole range is taken. */
  claim(): number {
    for (let i = 0; i < this.count; i++) {
      const uid = this.base + ((this.next + i) % this.count);
      try {
        fs.writeFileSync(path.join(this.dir, String(uid)), String(this.pid), { flag: 'wx', mode: 0o600 });
        this.next = (this.next + i + 1) % this.count;
        return uid;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    throw new Error(`all ${this.count} VM uids from ${this.base} are in use (MAYFLY_JAILER_UID_COUNT)`);
  }

  release(uid: number): void {
    fs.rmSync(path.join(this.dir, String(uid)), { force: true });
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
