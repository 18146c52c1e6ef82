import { defineConfig } from 'vitest/config';

// VM tests boot real QEMU guests under TCG (seconds each, CPU-bound on 2 cores):
// at most two test files at once, generous timeouts, never retried.
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts', 'test/security/**/*.test.ts'],
    // The Tinyx kernel suites build kernels (minutes on a fresh machine) and are unfinished:
    // they run with `npm run test:tinyx`, not in CI. The Xen suite: `npm run test:xen`.
    exclude: ['test/integration/tinyx-*.test.ts', '**/node_modules/**', 'dist/**'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 300_000,
    retry: 0,
  },
});
