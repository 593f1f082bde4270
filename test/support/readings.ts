import type pg from 'pg';

export interface StoredReading {
  ts: Date;
  cell: string | null;
  lat: number | null;
  lng: number | null;
  alt: number | null;
  values: Record<string, number>;
}

/** What the database holds for one device, values by key name, oldest first (read straight from the tables). */
export async function storedReadings(db: pg.Pool | pg.Client, deviceId: number): Promise<StoredReading[]> {
  const { rows } = await db.query<StoredReading>(
    `SELECT r.ts, r.cell::text AS cell, r.lat, r.lng, r.alt,
            coalesce((SELECT jsonb_object_agg(k.name, u.v) FROM unnest(r.keys, r.vals) AS u(id, v) JOIN telemetry_keys k ON k.id = u.id), '{}') AS values
       FROM readings r WHERE r.device_id = $1 ORDER BY r.ts`,
    [deviceId],
  );
  return rows;
}
