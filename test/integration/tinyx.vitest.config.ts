import { defineConfig } from 'vitest/config';

// `npm run test:tinyx`: the Tinyx kernel suites (they build kernels: minutes the first time on a machine).
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/integration/tinyx-*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 3_600_000,
    hookTimeout: 3_600_000,
  },
});
