import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../core/free-port.ts';
import { createTestDatabase } from '../support/database.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';
import { streamReadings } from '../support/stream.ts';
import { expectExactlyStored } from '../support/verify.ts';

const DEVICES = 20;
const PER_DEVICE = 5000; // 100k QoS 1 readings
const T0 = Date.UTC(2026, 10, 21);
const ADMIN_KEY = 'crash-test-admin-key-0123456789';

/**
 * kill -9 of the GuanLink process in the middle of a stream, then a restart: firmware resends
 * what was not acknowledged, and the database ends up holding every reading exactly once.
 */
describe('zero loss across kill -9 of the platform', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  async function crashAndRecover(env: Record<string, string | undefined>, databaseUrl: () => Promise<string>) {
    const ports = { httpPort: await freePort(), mqttPort: await freePort() };
    const processes: GuanlinkProcess[] = [];
    const start = async () => {
      const p = await spawnGuanlink({ GUANLINK_ADMIN_KEY: ADMIN_KEY, ...env }, ['--no-simulators'], ports);
      processes.push(p);
      cleanups.push(async () => void p.child.kill('SIGKILL'));
      await waitReady(p);
      return p;
    };
    const first = await start();
    const devices = [];
    for (let i = 0; i < DEVICES; i++) {
      const res = await fetch(`${first.httpUrl}/api/v1/devices`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `crash-${i}` }),
      });
      const d = (await res.json()) as { id: number; accessToken: string };
      devices.push({ id: d.id, token: d.accessToken });
    }
    let recovered: Promise<GuanlinkProcess> | undefined;
    let ackedAtKill = 0;
    const result = await streamReadings({
      mqttUrl: first.mqttUrl,
      devices,
      perDevice: PER_DEVICE,
      t0: T0,
      window: 50,
      onProgress: (acked) => {
        if (!recovered && acked >= 30_000) {
          ackedAtKill = acked;
          first.child.kill('SIGKILL');
          recovered = first.exited.then(start);
        }
      },
    });
    const second = await recovered!;
    expect(await first.exited).toBe('SIGKILL');
    expect(ackedAtKill).toBeGreaterThanOrEqual(30_000);
    expect(result.reconnects).toBeGreaterThanOrEqual(DEVICES);
    expect(result.totalAcked).toBe(DEVICES * PER_DEVICE);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    await expectExactlyStored(await databaseUrl(), result, PER_DEVICE, T0);
  }

  it('with DATABASE_URL: every reading stored exactly once after kill -9 and restart', async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-crash-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    await crashAndRecover({ DATABASE_URL: db.url, DATA_DIR: dataDir }, async () => db.url);
  });

  it.runIf(inject('databaseKind') === 'embedded')(
    'on the embedded PostgreSQL: the orphaned database is stopped and every reading is there after kill -9 and restart',
    async () => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-crash-'));
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      // The platform is stopped (SIGTERM) before verification; read its database with a fresh embedded start.
      await crashAndRecover({ DATA_DIR: dataDir }, async () => {
        const { startEmbeddedPostgres } = await import('../../db/embedded.ts');
        const { createLogger } = await import('../../core/log.ts');
        const db = await startEmbeddedPostgres(dataDir, createLogger('warn'));
        cleanups.push(() => db.stop());
        return db.url;
      });
    },
  );
});
