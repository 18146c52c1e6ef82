/**
 * The console's built assets (dist/gateway/console/public: app.js, app.css and
 * their source maps), read into memory once and served by name. Only files of
 * the known types in that one folder are served; nothing else is reachable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../../contracts/config.js';

export const ASSETS_DIR = path.join(PROJECT_ROOT, 'dist', 'gateway', 'console', 'public');

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

export interface Asset {
  type: string;
  body: Buffer;
}

export class Assets {
  private files: Map<string, Asset> | null = null;

  constructor(private readonly dir: string = ASSETS_DIR) {}

  /** The asset of this name; null when there is none. Throws when the console was never built. */
  get(name: string): Asset | null {
    return this.load().get(name) ?? null;
  }

  private load(): Map<string, Asset> {
    if (this.files) return this.files;
    if (!fs.existsSync(path.join(this.dir, 'app.js'))) {
      throw new Error(`the console's assets are not built (${this.dir}); run \`npm run build\``);
    }
    const files = new Map<string, Asset>();
    for (const name of fs.readdirSync(this.dir)) {
      const type = TYPES[path.extname(name)];
      if (type) files.set(name, { type, body: fs.readFileSync(path.join(this.dir, name)) });
    }
    this.files = files;
    return files;
  }
}
