/**
 * Randomness for a VM cloned from a template. A clone starts with a copy of the
 * template's memory, so every random number generator inside it (the kernel's
 * crng, OpenSSL's DRBG in node, V8's Math.random state) would produce the SAME
 * sequence in every clone. After restore the host sends fresh entropy; this
 * module
 *  - mixes it into the kernel pool (write to /dev/urandom), and
 *  - makes every JS-visible random source differ per clone: the output of
 *    node's crypto RNG is XORed with an AES-256-CTR keystream keyed by the
 *    clone's entropy (XOR with an independent secure stream keeps the result
 *    secure even though the underlying DRBG is shared), and Math.random draws
 *    from that combined source.
 * Named ESM imports of `node:crypto` see the wrappers through
 * syncBuiltinESMExports(). Shipped into the guest: Node built-ins only.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

type Fill = <T extends NodeJS.ArrayBufferView>(buf: T, offset?: number, size?: number) => T;

/**
 * The current clone's keystream, made from `entropy` on the first random draw
 * after a reseed (most handlers draw none, and under emulation setting up the
 * hashes and the cipher is a real share of a clone's start).
 */
let stream: crypto.Cipher | null = null;
let entropy: Buffer | null = null;
let installed = false;
let resetMathPool: () => void = () => {};
const zeros = Buffer.alloc(4096);

function keystream(n: number): Buffer {
  if (!stream) {
    const e = entropy ?? Buffer.alloc(0);
    const key = crypto.createHash('sha256').update('mayfly-clone-rng-key').update(e).digest();
    const iv = crypto.createHash('sha256').update('mayfly-clone-rng-iv').update(e).digest().subarray(0, 16);
    stream = crypto.createCipheriv('aes-256-ctr', key, iv);
  }
  const parts: Buffer[] = [];
  for (let left = n; left > 0; left -= zeros.length) parts.push(stream!.update(zeros.subarray(0, Math.min(left, zeros.length))));
  return Buffer.concat(parts, n);
}

/**
 * Re-keys the random sources with this clone's entropy. The wrappers are
 * installed once; every later call only replaces the key. That lets a
 * template run a warm-up reseed before its snapshot (so clones resume with
 * this code already translated) while each clone still gets its own key.
 */
export function reseedCloneRng(fresh: Buffer): void {
  try {
    fs.writeFileSync('/dev/urandom', fresh);
  } catch {
    // not in a guest (unit tests): nothing to mix into
  }
  // The old keystream (the template's, shared by every clone) is gone before any code can draw.
  entropy = Buffer.from(fresh);
  stream = null;
  resetMathPool();
  if (!installed) {
    installed = true;
    installWrappers();
  }
}

function installWrappers(): void {
  const mix = (bytes: Uint8Array, offset: number, size: number): void => {
    const ks = keystream(size);
    for (let i = 0; i < size; i++) bytes[offset + i]! ^= ks[i]!;
  };

  const origFillSync = crypto.randomFillSync.bind(crypto) as Fill;
  // Like node's: offset and size count elements of a typed array, bytes otherwise.
  const fillSync: Fill = (buf, offset = 0, size) => {
    const el = (buf as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1;
    const byteOffset = offset * el;
    const byteLength = size === undefined ? buf.byteLength - byteOffset : size * el;
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    origFillSync(bytes, byteOffset, byteLength);
    mix(bytes, byteOffset, byteLength);
    return buf;
  };

  const c = crypto as unknown as Record<string, unknown>;
  c.randomFillSync = fillSync;
  c.randomBytes = (size: number, cb?: (err: Error | null, buf: Buffer) => void) => {
    const buf = fillSync(Buffer.allocUnsafe(size));
    if (cb) {
      queueMicrotask(() => cb(null, buf));
      return undefined;
    }
    return buf;
  };
  c.randomFill = (buf: NodeJS.ArrayBufferView, ...rest: unknown[]) => {
    const cb = rest.pop() as (err: Error | null, b: NodeJS.ArrayBufferView) => void;
    const [offset, size] = rest as [number | undefined, number | undefined];
    try {
      fillSync(buf, offset ?? 0, size);
      queueMicrotask(() => cb(null, buf));
    } catch (err) {
      queueMicrotask(() => cb(err as Error, buf));
    }
  };
  c.randomUUID = () => {
    const b = fillSync(Buffer.allocUnsafe(16));
    b[6] = (b[6]! & 0x0f) | 0x40;
    b[8] = (b[8]! & 0x3f) | 0x80;
    const h = b.toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
  c.randomInt = (min: number, max?: number, cb?: (err: Error | null, n: number) => void) => {
    if (max === undefined || typeof max === 'function') {
      cb = max as unknown as typeof cb;
      max = min;
      min = 0;
    }
    const range = max - min;
    if (!Number.isSafeInteger(range) || range <= 0) throw new RangeError('randomInt: max must be greater than min');
    // Rejection sampling over 48 bits, as node does.
    const limit = 2 ** 48 - (2 ** 48 % range);
    let x: number;
    do x = fillSync(Buffer.allocUnsafe(6)).readUIntBE(0, 6);
    while (x >= limit);
    const n = min + (x % range);
    if (cb) {
      queueMicrotask(() => cb!(null, n));
      return undefined;
    }
    return n;
  };
  const getRandomValues = <T extends ArrayBufferView | null>(arr: T): T => {
    if (arr) fillSync(arr as unknown as NodeJS.ArrayBufferView);
    return arr;
  };
  // crypto.getRandomValues is a fixed getter that calls the Web Crypto method: patch that one, on its prototype.
  Object.defineProperty(Object.getPrototypeOf(crypto.webcrypto), 'getRandomValues', {
    value: getRandomValues,
    configurable: true,
    writable: true,
  });

  // Math.random: 53 random bits per number, from the per-clone source.
  let pool = Buffer.alloc(0);
  let pos = 0;
  resetMathPool = () => {
    pool = Buffer.alloc(0);
    pos = 0;
  };
  Math.random = () => {
    if (pos + 8 > pool.length) {
      pool = fillSync(Buffer.allocUnsafe(8 * 256));
      pos = 0;
    }
    const hi = pool.readUInt32BE(pos) >>> 5; // 27 bits
    const lo = pool.readUInt32BE(pos + 4) >>> 6; // 26 bits
    pos += 8;
    return (hi * 67108864 + lo) / 9007199254740992;
  };
  syncBuiltinESMExports();
}
