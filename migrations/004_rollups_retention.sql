-- Per-device-key rollups at 1 minute and 1 hour, and per-domain retention.
--
-- Rollups are maintained by GuanLink itself (db/rollups.ts), not by TimescaleDB continuous
-- aggregates: those need the Timescale-licensed build, and this path works on every edition and
-- on plain PostgreSQL. Each bucket is (re)computed from the raw readings (1 h from 1 min), never
-- incremented, so retransmissions, restarts and a second node cannot double-count.
-- Like readings, rollups live in one table per domain (rollups_1m_water, …) so that retention
-- drops whole chunks of one domain; the views rollups_1m and rollups_1h union them.

DO $$
DECLARE
  d text;
  t text;
  res text;
BEGIN
  FOREACH d IN ARRAY ARRAY['water', 'environment', 'traffic', 'air-space-ground', 'generic'] LOOP
    FOREACH res IN ARRAY ARRAY['1m', '1h'] LOOP
      t := 'rollups_' || res || '_' || replace(d, '-', '_');
      EXECUTE format($f$
        CREATE TABLE %1$I (
          device_id   integer NOT NULL,
          key_id      smallint NOT NULL,
          bucket      timestamptz NOT NULL,          -- start of the minute / hour (UTC-aligned)
          count       integer NOT NULL,
          sum         double precision NOT NULL,     -- avg = sum / count
          min         double precision NOT NULL,
          max         double precision NOT NULL,
          last_ts     timestamptz NOT NULL,          -- newest reading in the bucket…
          last_value  double precision NOT NULL,     -- …and its value
          PRIMARY KEY (device_id, key_id, bucket)
        )$f$, t);
      IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable(t::regclass, 'bucket',
          chunk_time_interval => CASE res WHEN '1m' THEN INTERVAL '7 days' ELSE INTERVAL '90 days' END,
          create_default_indexes => false);
      END IF;
      -- Time ranges of every device: hours are computed from a range of minutes, a refresh empties
      -- the range it rolls up, retention deletes by time on plain PostgreSQL. (A BRIN index is not
      -- enough: right after a large catch-up its newest ranges are unsummarised and scanned whole.)
      EXECUTE format('CREATE INDEX %I ON %I (bucket)', t || '_bucket', t);
    END LOOP;
  END LOOP;
END $$;

CREATE VIEW rollups_1m AS
            SELECT 'water'::text AS domain, * FROM rollups_1m_water
  UNION ALL SELECT 'environment', * FROM rollups_1m_environment
  UNION ALL SELECT 'traffic', * FROM rollups_1m_traffic
  UNION ALL SELECT 'air-space-ground', * FROM rollups_1m_air_space_ground
  UNION ALL SELECT 'generic', * FROM rollups_1m_generic;

CREATE VIEW rollups_1h AS
            SELECT 'water'::text AS domain, * FROM rollups_1h_water
  UNION ALL SELECT 'environment', * FROM rollups_1h_environment
  UNION ALL SELECT 'traffic', * FROM rollups_1h_traffic
  UNION ALL SELECT 'air-space-ground', * FROM rollups_1h_air_space_ground
  UNION ALL SELECT 'generic', * FROM rollups_1h_generic;

-- One row. `announced`: ingest treats a reading older than this as late and records an
-- invalidation for it. `done`: every minute before it is in rollups_1m, every hour before
-- date_trunc('hour', done) in rollups_1h. announced >= done; both only move forward.
CREATE TABLE rollup_state (
  id          boolean PRIMARY KEY DEFAULT true CHECK (id),
  announced   timestamptz,
  done        timestamptz,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rollup_state DEFAULT VALUES;

-- Minutes that received late readings (written in the same transaction as the readings); the
-- refresher recomputes them and their hours, then deletes exactly the rows it read.
CREATE TABLE rollup_invalidations (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  domain     text NOT NULL,
  device_id  integer NOT NULL,
  bucket     timestamptz NOT NULL               -- the minute
);
CREATE INDEX rollup_invalidations_device_bucket ON rollup_invalidations (device_id, bucket);

-- Called by ingest inside each batch's transaction, after the rows are written: waits for a
-- refresher announcing a new watermark (exclusive lock, held for a moment), then returns the
-- announced watermark from a snapshot taken after that. The refresher takes the same lock
-- exclusively, so every batch either committed before the refresher reads the raw rows, or sees
-- the new watermark and records its late rows. Shared locks do not block each other.
CREATE FUNCTION guanlink_rollup_watermark() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  w timestamptz;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(7004117310401);
  SELECT announced INTO w FROM rollup_state;
  RETURN w;
END $$;

CREATE FUNCTION guanlink_rollup_announce(w timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  result timestamptz;
BEGIN
  PERFORM pg_advisory_xact_lock(7004117310401);
  UPDATE rollup_state SET announced = greatest(announced, w), updated_at = now() RETURNING announced INTO result;
  RETURN result;
END $$;

-- How long each domain keeps its data; applied by db/retention.ts (hourly by default). NULL keeps
-- forever. Rollups must be kept at least as long as what they summarise (raw <= 1m <= 1h), so a
-- long-range query always finds the coarser level where the finer one is gone.
CREATE TABLE retention_policies (
  domain         text PRIMARY KEY CHECK (domain IN ('water', 'environment', 'traffic', 'air-space-ground', 'generic')),
  raw_days       integer CHECK (raw_days BETWEEN 1 AND 36500),
  rollup_1m_days integer CHECK (rollup_1m_days BETWEEN 1 AND 36500),
  rollup_1h_days integer CHECK (rollup_1h_days BETWEEN 1 AND 36500),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  CHECK (rollup_1m_days IS NULL OR (raw_days IS NOT NULL AND rollup_1m_days >= raw_days)),
  CHECK (rollup_1h_days IS NULL OR (rollup_1m_days IS NOT NULL AND rollup_1h_days >= rollup_1m_days))
);

-- City defaults (change them with PUT /api/v1/retention/{domain}):
-- water: 2 years raw, 5 years of minutes, hours forever — flood-season and drought analyses
--   compare against previous years, and hydrological records are kept indefinitely.
-- environment: 1 year raw, 3 years of minutes, hours forever — air-quality and noise assessments
--   report annual figures and long-term trends from hourly means.
-- traffic: 90 days raw, 1 year of minutes, 5 years of hours — the busiest domain (detectors,
--   buses); raw tracks are operational data that also touch personal movement, so kept short.
-- air-space-ground: 180 days raw, 2 years of minutes, 5 years of hours — drone and satellite
--   telemetry is high-volume; missions are reviewed within months.
-- generic: 1 year raw, 2 years of minutes, 5 years of hours.
INSERT INTO retention_policies (domain, raw_days, rollup_1m_days, rollup_1h_days) VALUES
  ('water', 730, 1825, NULL),
  ('environment', 365, 1095, NULL),
  ('traffic', 90, 365, 1825),
  ('air-space-ground', 180, 730, 1825),
  ('generic', 365, 730, 1825);
