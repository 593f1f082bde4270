import { afterAll, describe, expect, inject, it } from 'vitest';
import { controlledServer, type ControlledServer } from '../support/database-control.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { streamReadings } from '../support/stream.ts';
import { expectExactlyStored } from '../support/verify.ts';

const DEVICES = 20;
const PER_DEVICE = 5000; // 100k QoS 1 readings
const T0 = Date.UTC(2026, 10, 20);

const canControl = inject('databaseKind') === 'embedded' || Boolean(process.env.DATABASE_CONTROL);

describe('zero loss across a database restart', () => {
  let server: ControlledServer | undefined;
  let db: TestDatabase | undefined;
  let t: TestPlatform | undefined;
  afterAll(async () => {
    await t?.stop();
    await db?.drop().catch(() => {});
    await server?.dispose();
  });

  it.runIf(canControl)(`stores exactly the acknowledged readings when the ${inject('databaseKind') === 'embedded' ? 'embedded PostgreSQL' : 'TimescaleDB server'} restarts during 100k QoS 1 readings`, async () => {
    server = (await controlledServer())!;
    db = await createTestDatabase(server.url);
    t = await startTestPlatform({}, { database: db });
    const devices = [];
    for (let i = 0; i < DEVICES; i++) {
      const d = await t.createDevice({ name: `restart-${i}` });
      devices.push({ id: d.id, token: d.accessToken });
    }
    let restarted: Promise<void> | undefined;
    let ackedAtRestart = 0;
    const result = await streamReadings({
      mqttUrl: t.mqttUrl,
      devices,
      perDevice: PER_DEVICE,
      t0: T0,
      window: 50,
      onProgress: (acked) => {
        if (!restarted && acked >= 30_000) {
          ackedAtRestart = acked;
          restarted = server!.restart();
        }
      },
    });
    await restarted;
    expect(ackedAtRestart).toBeGreaterThanOrEqual(30_000);
    expect(result.totalAcked).toBe(DEVICES * PER_DEVICE);
    await expectExactlyStored(db.url, result, PER_DEVICE, T0);
  });
});
