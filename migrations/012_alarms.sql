-- Alarms (core/alarms.ts): rules evaluated against committed readings and geofence events, and
-- the alarms they raise.
--
-- A threshold rule watches one telemetry key of every device of one type:
--   operator '>' / '>='  raised when value > (>=) raise_threshold, cleared when value < clear_threshold
--   operator '<' / '<='  raised when value < (<=) raise_threshold, cleared when value > clear_threshold
-- clear_threshold is the hysteresis: for '>' it is at or below the raise threshold, for '<' at or
-- above it; a value between the two changes nothing. The condition must hold on every reading for
-- min_duration_seconds before the alarm is raised, and the clear condition for
-- clear_duration_seconds before it is cleared (both measured on the readings' timestamps).
-- A geofence_exit rule is raised when a device of the type leaves the named geofence (and stays
-- out for min_duration_seconds), cleared when it enters it again.
CREATE TABLE alarm_rules (
  id                      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name                    text NOT NULL UNIQUE,
  description             text,
  kind                    text NOT NULL CHECK (kind IN ('threshold', 'geofence_exit')),
  device_type             text NOT NULL,        -- no foreign key: built-in types are written at start, after migrations; rules of a deleted custom type are deleted with it (core/alarms.ts)
  key                     text,
  operator                text CHECK (operator IN ('>', '>=', '<', '<=')),
  raise_threshold         double precision,
  clear_threshold         double precision,
  geofence                text,
  min_duration_seconds    integer NOT NULL DEFAULT 0 CHECK (min_duration_seconds BETWEEN 0 AND 604800),
  clear_duration_seconds  integer NOT NULL DEFAULT 0 CHECK (clear_duration_seconds BETWEEN 0 AND 604800),
  severity                text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
  enabled                 boolean NOT NULL DEFAULT true,
  builtin                 boolean NOT NULL DEFAULT false,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CHECK (kind <> 'threshold' OR (key IS NOT NULL AND operator IS NOT NULL AND raise_threshold IS NOT NULL AND clear_threshold IS NOT NULL AND geofence IS NULL)),
  CHECK (kind <> 'geofence_exit' OR (geofence IS NOT NULL AND key IS NULL AND operator IS NULL AND raise_threshold IS NULL AND clear_threshold IS NULL)),
  CHECK (operator IS NULL OR (operator IN ('>', '>=') AND clear_threshold <= raise_threshold) OR (operator IN ('<', '<=') AND clear_threshold >= raise_threshold))
);
CREATE INDEX alarm_rules_device_type ON alarm_rules (device_type);

-- One row per alarm. Status: raised → acknowledged (by whom, when) → cleared; an alarm may also be
-- cleared without having been acknowledged. What the rule said at raise time is copied (name,
-- severity, key, thresholds), so an alarm keeps its meaning when its rule is changed or deleted.
-- Times: raised_at and a condition clear's cleared_at are the timestamps of the readings (or
-- geofence events) that completed the condition; acknowledged_at and a manual clear's cleared_at
-- are server time.
CREATE TABLE alarms (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  rule_id          integer REFERENCES alarm_rules (id) ON DELETE SET NULL,
  device_id        integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  rule_name        text NOT NULL,
  kind             text NOT NULL,
  key              text,
  operator         text,
  threshold        double precision,       -- the raise threshold in force at raise time
  geofence         text,
  severity         text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
  status           text NOT NULL CHECK (status IN ('raised', 'acknowledged', 'cleared')),
  condition_since  timestamptz NOT NULL,   -- when the condition began to hold (raised_at minus the wait)
  raised_at        timestamptz NOT NULL,
  value            double precision,       -- the value that raised it (threshold rules)
  last_value       double precision,       -- the latest value seen while open (written every few seconds)
  last_value_at    timestamptz,
  peak_value       double precision,       -- the worst value while open: highest for '>' rules, lowest for '<'
  lat              double precision,       -- where the device was when it was raised, when known
  lng              double precision,
  acknowledged_at  timestamptz,
  acknowledged_by  text,
  ack_note         text,
  cleared_at       timestamptz,
  cleared_by       text,                   -- who cleared it by hand; null when the system did
  clear_reason     text CHECK (clear_reason IN ('condition', 'manual', 'rule_disabled', 'rule_changed', 'rule_deleted', 'device_type_changed')),
  clear_note       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CHECK ((status = 'cleared') = (cleared_at IS NOT NULL)),
  CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);
-- At most one open alarm per rule and device.
CREATE UNIQUE INDEX alarms_open ON alarms (rule_id, device_id) WHERE status <> 'cleared';
CREATE INDEX alarms_device ON alarms (device_id, id DESC);
CREATE INDEX alarms_raised_at ON alarms (raised_at);
CREATE INDEX alarms_status ON alarms (status, id DESC) WHERE status <> 'cleared';

-- Rules for the simulated domains (README "Alarms" explains each level). Levels are metres above
-- the Pearl River datum, as the river level stations report them.
INSERT INTO alarm_rules (name, description, kind, device_type, key, operator, raise_threshold, clear_threshold, geofence, min_duration_seconds, clear_duration_seconds, severity, builtin) VALUES
  ('flood-warning-level', 'River above its warning level (警戒水位)', 'threshold', 'river-level-station', 'water_level', '>', 3.8, 3.5, NULL, 600, 1800, 'major', true),
  ('flood-danger-level', 'River above its guaranteed (danger) level (保证水位)', 'threshold', 'river-level-station', 'water_level', '>', 4.3, 4.1, NULL, 600, 1800, 'critical', true),
  ('short-duration-heavy-rain', 'Short-duration heavy rain: 20 mm or more in an hour (短时强降水)', 'threshold', 'river-level-station', 'rainfall_1h', '>=', 20, 10, NULL, 0, 900, 'warning', true),
  ('aqi-heavily-polluted', 'AQI above 200: heavily polluted (重度污染)', 'threshold', 'air-quality-station', 'aqi', '>', 200, 180, NULL, 900, 900, 'major', true),
  ('traffic-congestion', 'Average speed below 20 km/h for 5 minutes (拥堵)', 'threshold', 'traffic-detector', 'avg_speed', '<', 20, 30, NULL, 300, 300, 'minor', true),
  ('traffic-lane-occupancy-high', 'Lane occupancy above 30 % for 5 minutes (占有率过高)', 'threshold', 'traffic-detector', 'occupancy', '>', 30, 20, NULL, 300, 300, 'minor', true),
  ('water-pressure-low', 'Pipe pressure below 0.20 MPa for 5 minutes: peak-demand shortfall or a burst (低压)', 'threshold', 'pipe-pressure-sensor', 'pressure', '<', 0.2, 0.22, NULL, 300, 300, 'major', true),
  ('pressure-sensor-battery-low', 'Pressure sensor battery below 15 %: schedule a replacement', 'threshold', 'pipe-pressure-sensor', 'battery', '<', 15, 20, NULL, 600, 0, 'warning', true),
  ('drone-battery-reserve', 'Drone battery below the 30 % return reserve for 30 seconds', 'threshold', 'drone', 'battery', '<', 30, 50, NULL, 30, 0, 'warning', true),
  ('drone-battery-low', 'Drone battery below 20 % (well inside the landing reserve)', 'threshold', 'drone', 'battery', '<', 20, 30, NULL, 10, 0, 'critical', true),
  ('drone-link-weak', 'Drone link quality below 50 % for a minute', 'threshold', 'drone', 'signal', '<', 50, 60, NULL, 60, 30, 'warning', true),
  ('drone-altitude-ceiling', 'Drone above 120 m, the ceiling for light drones in China', 'threshold', 'drone', 'altitude', '>', 120, 115, NULL, 10, 10, 'major', true),
  ('drone-left-corridor', 'Drone outside its patrol corridor for 30 seconds (geofence drone-corridors, migration 011)', 'geofence_exit', 'drone', NULL, NULL, NULL, NULL, 'drone-corridors', 30, 0, 'critical', true);
