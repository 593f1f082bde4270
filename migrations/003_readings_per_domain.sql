-- Readings move to one table per domain, in the typed-medium shape chosen by measurement
-- (bench/README.md): one row per device and timestamp, with key ids and float8 values in two
-- parallel arrays. Per-domain tables let retention drop whole chunks of one domain (TimescaleDB)
-- and keep each domain's indexes small. `readings` becomes a view over all of them.

CREATE TABLE telemetry_keys (
  id    smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name  text NOT NULL UNIQUE
);

CREATE FUNCTION guanlink_readings_table(domain text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'readings_' || replace(domain, '-', '_') $$;

DO $$
DECLARE
  d text;
  t text;
BEGIN
  FOREACH d IN ARRAY ARRAY['water', 'environment', 'traffic', 'air-space-ground', 'generic'] LOOP
    t := guanlink_readings_table(d);
    EXECUTE format($f$
      CREATE TABLE %1$I (
        device_id  integer NOT NULL,
        ts         timestamptz NOT NULL,
        cell       bigint,
        lat        double precision,
        lng        double precision,
        alt        real,
        keys       smallint[] NOT NULL,
        vals       double precision[] NOT NULL,
        CHECK (cardinality(keys) = cardinality(vals))
      )$f$, t);
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
      PERFORM create_hypertable(t::regclass, 'ts', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
    END IF;
    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (device_id, ts DESC)', t || '_device_ts', t);
    EXECUTE format('CREATE INDEX %I ON %I (cell, ts) WHERE cell IS NOT NULL', t || '_cell_ts', t);
    EXECUTE format('CREATE INDEX %I ON %I USING brin (ts)', t || '_ts_brin', t);
  END LOOP;
END $$;

-- Carry over what the first schema stored (jsonb values), keys first.
INSERT INTO telemetry_keys (name)
SELECT DISTINCT k FROM readings, jsonb_object_keys(vals) AS k ORDER BY 1;

DO $$
DECLARE
  d text;
BEGIN
  FOREACH d IN ARRAY ARRAY['water', 'environment', 'traffic', 'air-space-ground', 'generic'] LOOP
    EXECUTE format($f$
      INSERT INTO %I (device_id, ts, cell, lat, lng, alt, keys, vals)
      SELECT r.device_id, r.ts, r.cell, r.lat, r.lng, r.alt,
             coalesce((SELECT array_agg(k.id ORDER BY k.id) FROM jsonb_each_text(r.vals) e JOIN telemetry_keys k ON k.name = e.key), '{}'),
             coalesce((SELECT array_agg(e.value::float8 ORDER BY k.id) FROM jsonb_each_text(r.vals) e JOIN telemetry_keys k ON k.name = e.key), '{}')
        FROM readings r
        JOIN devices dv ON dv.id = r.device_id
        JOIN device_types ty ON ty.name = dv.type
       WHERE ty.domain = %L$f$, guanlink_readings_table(d), d);
  END LOOP;
END $$;

DROP TABLE readings;
CREATE VIEW readings AS
            SELECT 'water'::text AS domain, * FROM readings_water
  UNION ALL SELECT 'environment', * FROM readings_environment
  UNION ALL SELECT 'traffic', * FROM readings_traffic
  UNION ALL SELECT 'air-space-ground', * FROM readings_air_space_ground
  UNION ALL SELECT 'generic', * FROM readings_generic;

-- A retransmission (same device and ts) adds its keys to the stored row; a key present in both keeps the newer write.
CREATE FUNCTION guanlink_merge_values(old_keys smallint[], old_vals double precision[], new_keys smallint[], new_vals double precision[],
                                      OUT keys smallint[], OUT vals double precision[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(k ORDER BY k), '{}'), coalesce(array_agg(v ORDER BY k), '{}')
    FROM (SELECT DISTINCT ON (k) k, v
            FROM (SELECT k, v, 1 AS pri FROM unnest(new_keys, new_vals) AS n(k, v)
                  UNION ALL
                  SELECT k, v, 2 FROM unnest(old_keys, old_vals) AS o(k, v)) both_rows
           ORDER BY k, pri) merged
$$;
