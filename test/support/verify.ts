import pg from 'pg';
import { expect } from 'vitest';
import { storedReadings } from './readings.ts';
import type { StreamResult } from './stream.ts';

/**
 * The database holds exactly what was acknowledged: for every device, one row per reading
 * 0..perDevice-1 (ts = t0 + n, value n), none missing, none twice, nothing else.
 */
export async function expectExactlyStored(url: string, result: StreamResult, perDevice: number, t0: number): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (const [deviceId, acked] of result.acked) {
      expect(acked.size, `device ${deviceId}: acknowledged`).toBe(perDevice);
      const rows = await storedReadings(c, deviceId);
      expect(rows.length, `device ${deviceId}: rows`).toBe(perDevice);
      const bad = rows.filter((r, i) => r.values.n !== i || r.ts.getTime() !== t0 + i);
      expect(bad.slice(0, 3), `device ${deviceId}: rows equal what was sent`).toEqual([]);
    }
  } finally {
    await c.end();
  }
}
