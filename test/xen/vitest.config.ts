import { defineConfig } from 'vitest/config';

// The Xen suite: one nested Xen host (QEMU/TCG) per run, tests in order, very generous timeouts.
export default defineConfig({
  test: {
    include: ['test/xen/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 1_200_000,
    hookTimeout: 1_200_000,
    retry: 0,
  },
});
