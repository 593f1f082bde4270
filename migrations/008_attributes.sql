-- Device attributes, ThingsBoard's three scopes (core/attributes.ts):
--   client  reported by the device (v1/devices/me/attributes);
--   shared  set through the REST API and pushed to the device, which may also request them;
--   server  set through the REST API, never seen by the device.
-- One row per device, scope and key; the value is any JSON value but null (string, number,
-- boolean, object or array).
CREATE TABLE device_attributes (
  device_id   integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  scope       text NOT NULL CHECK (scope IN ('client', 'shared', 'server')),
  key         text NOT NULL,
  value       jsonb NOT NULL CHECK (jsonb_typeof(value) <> 'null'),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, scope, key)
);
