import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { createLogger } from '../../core/log.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../db/embedded.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A server where each test file creates (and drops) its own database. */
    databaseUrl: string;
    databaseKind: 'external' | 'embedded';
  }
}

/**
 * Integration tests run against a real PostgreSQL: DATABASE_URL when set (CI points it at
 * TimescaleDB), otherwise an embedded PostgreSQL started here for the whole run.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.DATABASE_URL) {
    project.provide('databaseUrl', process.env.DATABASE_URL);
    project.provide('databaseKind', 'external');
    return async () => {};
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-test-'));
  const log = createLogger(process.env.TEST_LOG_LEVEL ?? 'warn');
  let db: EmbeddedDatabase;
  try {
    db = await startEmbeddedPostgres(dir, log, 'postgres');
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  project.provide('databaseUrl', db.url);
  project.provide('databaseKind', 'embedded');
  return async () => {
    await db.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
