import { defineConfig } from 'vitest/config';

// Two groups: everything else runs first, in parallel; then the disruptive tests (they stop and
// restart the database server or kill the platform) run alone, one file at a time.
export default defineConfig({
  test: {
    exclude: ['node_modules/**', 'data/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: 'main', include: ['**/*.test.ts'], exclude: ['node_modules/**', 'data/**', 'test/disruptive/**'], sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        test: {
          name: 'disruptive',
          include: ['test/disruptive/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 300_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
