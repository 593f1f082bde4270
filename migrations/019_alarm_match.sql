-- Match alarm rules (core/alarm-match.ts): a telemetry key compared for equality with a JSON
-- scalar. operator '==' is raised while the value equals `value`, '!=' while it does not; each is
-- cleared by the negation. No thresholds, so no hysteresis; the durations apply as for thresholds.

-- 012's hysteresis check took every operator for an ordering. It has no name of its own: found by
-- what it says rather than by the name PostgreSQL generated for it.
DO $$
DECLARE
  c text;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
            WHERE conrelid = 'alarm_rules'::regclass AND contype = 'c'
              AND pg_get_constraintdef(oid) LIKE '%clear_threshold <= raise_threshold%'
              AND pg_get_constraintdef(oid) NOT LIKE '%kind%' LOOP
    EXECUTE format('ALTER TABLE alarm_rules DROP CONSTRAINT %I', c);
  END LOOP;
END $$;

ALTER TABLE alarm_rules
  ADD COLUMN value jsonb,                                   -- match rules: the string, number or boolean compared with
  DROP CONSTRAINT alarm_rules_kind_check,
  DROP CONSTRAINT alarm_rules_operator_check,
  ADD CONSTRAINT alarm_rules_kind_check CHECK (kind IN ('threshold', 'geofence_exit', 'match')),
  ADD CONSTRAINT alarm_rules_operator_check CHECK (operator IN ('>', '>=', '<', '<=', '==', '!=')),
  ADD CONSTRAINT alarm_rules_threshold_operator CHECK (kind <> 'threshold' OR (operator IN ('>', '>=') AND clear_threshold <= raise_threshold) OR (operator IN ('<', '<=') AND clear_threshold >= raise_threshold)),
  ADD CONSTRAINT alarm_rules_match_fields CHECK (kind <> 'match' OR (key IS NOT NULL AND operator IN ('==', '!=') AND value IS NOT NULL AND jsonb_typeof(value) IN ('string', 'number', 'boolean')
                                                                     AND raise_threshold IS NULL AND clear_threshold IS NULL AND geofence IS NULL)),
  ADD CONSTRAINT alarm_rules_value_match_only CHECK (kind = 'match' OR value IS NULL);

-- A match alarm keeps the value compared with at raise time (as a threshold alarm keeps its
-- threshold). Observed values that are numbers stay in value/last_value; strings and booleans go
-- in the jsonb columns beside them, at most one of each pair set.
ALTER TABLE alarms
  ADD COLUMN match_value jsonb,
  ADD COLUMN value_json jsonb,
  ADD COLUMN last_value_json jsonb,
  ADD CONSTRAINT alarms_one_value CHECK (value IS NULL OR value_json IS NULL),
  ADD CONSTRAINT alarms_one_last_value CHECK (last_value IS NULL OR last_value_json IS NULL);
