-- Readings: one row per (device, timestamp) holding every value of that message. The shape was
-- chosen by measurement (bench/README.md): one row per message is ~3x faster to write and half
-- the size of one row per key, and it carries the position once.

CREATE TABLE readings (
  device_id  integer NOT NULL,
  ts         timestamptz NOT NULL,
  cell       bigint,                     -- H3 res 15; descendants of a coarser cell are one integer range
  lat        double precision,
  lng        double precision,
  alt        real,
  vals       jsonb NOT NULL              -- {"key": value, ...}; position keys live in the columns above
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
  END IF;
END $$;

-- Idempotency on (device, ts) and "device over time" reads.
CREATE UNIQUE INDEX readings_device_ts ON readings (device_id, ts DESC);
-- "Place over time": H3 range scans.
CREATE INDEX readings_cell_ts ON readings (cell, ts) WHERE cell IS NOT NULL;
-- Recent-window scans (crash recovery of latest values) on plain PostgreSQL; cheap to maintain.
CREATE INDEX readings_ts_brin ON readings USING brin (ts);

-- Latest values and position per device, saved periodically by ingest (ingest/latest.ts).
CREATE TABLE device_state (
  device_id    integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  last_ts      timestamptz NOT NULL,
  lat          double precision,
  lng          double precision,
  alt          double precision,
  cell         bigint,
  position_ts  timestamptz,
  latest       jsonb NOT NULL DEFAULT '{}',   -- {"key": [ts_ms, value], ...}
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_state_cell ON device_state (cell);

-- Per key, keep whichever of a and b holds the newer timestamp, so two writers never move a value back.
CREATE FUNCTION guanlink_merge_latest(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(a, '{}'::jsonb) || coalesce(
    (SELECT jsonb_object_agg(e.key, e.value)
       FROM jsonb_each(b) AS e
      WHERE a IS NULL OR NOT (a ? e.key) OR (a -> e.key ->> 0)::bigint <= (e.value ->> 0)::bigint),
    '{}'::jsonb)
$$;
