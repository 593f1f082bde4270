-- Server-side RPC (commands to devices), ThingsBoard's model (core/rpc.ts).
--
-- Every command sent through the REST API is a row. On the wire a command is identified only by
-- `request_id`, an integer unique per device (v1/devices/me/rpc/request/{request_id}); the device
-- answers on …/rpc/response/{request_id}, so a device can only ever answer its own commands.
--
-- Statuses (terminal ones have completed_at set):
--   queued     persistent, waiting for the device to be connected (or re-queued: the connection
--              ended before the device acknowledged it)
--   sent       written to the device's connection, its PUBACK not yet received
--   delivered  the device acknowledged it (PUBACK; at QoS 0, once written); terminal when one-way
--   answered   the device's response arrived (two-way)                                   terminal
--   expired    its expiry passed before it could be sent                                  terminal
--   timeout    sent, but not acknowledged or not answered in time                         terminal
--   failed     non-persistent: could not be written, or the connection ended before the PUBACK
--   cancelled  cancelled through the REST API while queued                                terminal
CREATE TABLE rpc_requests (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  device_id        integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  request_id       integer NOT NULL CHECK (request_id BETWEEN 1 AND 999999999),
  method           text NOT NULL,
  params           jsonb NOT NULL,
  one_way          boolean NOT NULL,
  persistent       boolean NOT NULL,
  timeout_ms       integer NOT NULL,
  status           text NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'answered', 'expired', 'timeout', 'failed', 'cancelled')),
  -- The device's answer is opaque (ThingsBoard passes it through): JSON is kept as JSON, anything
  -- else as its raw text (a JSON string) with response_format 'text'.
  response         jsonb,
  response_format  text CHECK (response_format IN ('json', 'text')),
  error            text,
  attempts         integer NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL DEFAULT now(),
  sent_at          timestamptz,
  delivered_at     timestamptz,
  completed_at     timestamptz,
  expires_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (device_id, request_id)
);
CREATE INDEX rpc_requests_device ON rpc_requests (device_id, id DESC);
-- The sweep: open requests by expiry, queued ones by device.
CREATE INDEX rpc_requests_open ON rpc_requests (expires_at) WHERE completed_at IS NULL;
CREATE INDEX rpc_requests_queued ON rpc_requests (device_id, id) WHERE status = 'queued';
CREATE INDEX rpc_requests_completed ON rpc_requests (completed_at) WHERE completed_at IS NOT NULL;

-- The last request id given to each device (ids are never reused, even after old rows are pruned,
-- so a late answer can never match a newer command).
CREATE TABLE rpc_request_ids (
  device_id        integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  last_request_id  integer NOT NULL
);
