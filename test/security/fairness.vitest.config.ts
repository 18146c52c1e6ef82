import { defineConfig } from 'vitest/config';

// `npm run test:fairness`: CPU fairness between VMs (test/security/cpu-fairness.idle-host.ts). Not in `npm test`:
// it measures latency under CPU contention, so it needs the machine to itself, like the benchmarks.
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['test/security/cpu-fairness.idle-host.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 300_000,
    retry: 0,
  },
});
