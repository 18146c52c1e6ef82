import { defineConfig } from 'vitest/config';

// The cluster fault suite (`npm run test:cluster`, root: network namespaces): one local cluster at a
// time (3 worker hosts of real QEMU VMs on 2 cores), so files and tests run one after another.
export default defineConfig({
  test: {
    include: ['test/cluster/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 900_000,
    hookTimeout: 300_000,
    retry: 0,
  },
});
