-- Every ThingsBoard value type (issue 11, item 2). Numbers keep the typed key-id/float8 arrays;
-- strings, booleans and JSON values go in `jvals`, a jsonb object keyed by the key id (as text),
-- NULL for an all-numeric row, so the numeric COPY path writes only one more NULL field. A key
-- has one value per row: it is in `keys` or in `jvals`, never both.

DO $$
DECLARE
  d text;
BEGIN
  FOREACH d IN ARRAY ARRAY['water', 'environment', 'traffic', 'air-space-ground', 'generic'] LOOP
    EXECUTE format('ALTER TABLE %I ADD COLUMN jvals jsonb', guanlink_readings_table(d));
  END LOOP;
END $$;

-- The view lists its columns when it is created: recreate it to carry jvals.
DROP VIEW readings;
CREATE VIEW readings AS
            SELECT 'water'::text AS domain, * FROM readings_water
  UNION ALL SELECT 'environment', * FROM readings_environment
  UNION ALL SELECT 'traffic', * FROM readings_traffic
  UNION ALL SELECT 'air-space-ground', * FROM readings_air_space_ground
  UNION ALL SELECT 'generic', * FROM readings_generic;

-- A retransmission (same device and ts) adds its keys to the stored row; a key present in both
-- keeps the newer write, whatever its type (a number replaced by a string leaves `keys`, and back).
CREATE FUNCTION guanlink_merge_typed_values(old_keys smallint[], old_vals double precision[], old_jvals jsonb,
                                            new_keys smallint[], new_vals double precision[], new_jvals jsonb,
                                            OUT keys smallint[], OUT vals double precision[], OUT jvals jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT m.keys, m.vals,
         nullif((coalesce(old_jvals, '{}'::jsonb) - coalesce((SELECT array_agg(k::text) FROM unnest(new_keys) AS k), '{}'::text[]))
                || coalesce(new_jvals, '{}'::jsonb), '{}'::jsonb)
    FROM (SELECT coalesce(array_agg(o.k ORDER BY o.k), '{}') AS k, coalesce(array_agg(o.v ORDER BY o.k), '{}') AS v
            FROM unnest(old_keys, old_vals) AS o(k, v)
           WHERE new_jvals IS NULL OR NOT new_jvals ? o.k::text) AS kept,
         guanlink_merge_values(kept.k, kept.v, new_keys, new_vals) AS m
$$;
