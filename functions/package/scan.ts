/**
 * Checks of the installed package tree: native addons (`.node` files: the
 * guest cannot load them, there is no compiler or matching ABI there) and the
 * total size (the unpacked limit covers node_modules too, like Lambda's 250 MiB).
 */
import fs from 'node:fs';
import path from 'node:path';
import { PackageError } from './errors.js';

export function scanTree(root: string, maxBytes: number): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) {
        walk(full);
        continue;
      }
      if (!e.isFile()) continue;
      const rel = path.relative(root, full);
      if (e.name.endsWith('.node')) {
        throw new PackageError(
          'NATIVE_ADDON',
          `${rel} is a native addon (.node); Mayfly's guests run JavaScript only and cannot load native addons: use a pure-JavaScript (or WebAssembly) package instead`,
          rel,
        );
      }
      files++;
      bytes += fs.statSync(full).size;
      if (bytes > maxBytes) {
        throw new PackageError('PACKAGE_TOO_LARGE', `the package with its installed dependencies is larger than ${maxBytes} bytes (MAYFLY_PACKAGE_MAX_UNPACKED_BYTES)`);
      }
    }
  };
  walk(root);
  return { files, bytes };
}
