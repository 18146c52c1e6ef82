import { defineConfig } from 'vitest/config';

// VM tests boot real QEMU guests under TCG (seconds each, CPU-bound on 2 cores):
// at most two test files at once, generous timeouts, never retried.
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts', 'test/security/**/*.test.ts'],
    // The global setup builds the guest images, including the tinyx kernel (2-10 min the first
    // time on a machine, then cached). The Xen suite is separate: `npm run test:xen`.
    exclude: ['**/node_modules/**', 'dist/**'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 180_000,
    hookTimeout: 300_000,
    retry: 0,
  },
});
