-- Connection state and its history (core/connectivity.ts), and device self-provisioning
-- (core/provisioning.ts).

-- The session a device_connectivity row describes and the node holding it: a node only ever
-- changes the rows of its own sessions, so a late disconnect from a node the device has left
-- cannot mark the device offline where it is connected now.
ALTER TABLE device_connectivity
  ADD COLUMN session_id text,
  ADD COLUMN node_id    text;
CREATE INDEX device_connectivity_node ON device_connectivity (node_id) WHERE online;

-- Nodes that hold device sessions, with a heartbeat: the devices of a node whose heartbeat
-- stopped (crash, power loss) are marked offline by the others, and by the node itself when it
-- starts again.
CREATE TABLE connectivity_nodes (
  node_id       text PRIMARY KEY,
  started_at    timestamptz NOT NULL DEFAULT now(),
  heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Connects and disconnects, as they happened. No foreign key: a deleted device's last
-- disconnect is recorded too, and its history stays until retention removes it.
CREATE TABLE device_events (
  at              timestamptz NOT NULL,
  device_id       integer NOT NULL,
  event           text NOT NULL CHECK (event IN ('connect', 'disconnect')),
  reason          text,                  -- disconnect: client_disconnect, connection_lost, keepalive_timeout, …
  address         text,                  -- the client's IP address
  client_id       text,                  -- the MQTT client id the device sent
  will_published  boolean,               -- disconnect: the device's last will was published
  node_id         text
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('device_events', 'at', chunk_time_interval => INTERVAL '7 days', create_default_indexes => false);
  END IF;
END $$;

CREATE INDEX device_events_device ON device_events (device_id, at DESC);
CREATE INDEX device_events_at ON device_events (at DESC);

-- Provision keys (ThingsBoard's provisionDeviceKey / provisionDeviceSecret): a device that knows
-- both registers itself and receives its credentials. The key is an identifier shared by a batch
-- of devices; the secret is stored only as a salted scrypt hash.
CREATE TABLE provision_keys (
  id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  key           text NOT NULL UNIQUE,
  secret_hash   text NOT NULL,
  name          text,
  device_type   text NOT NULL,           -- no foreign key: a key whose type is deleted refuses to provision (FAILURE)
  -- true: new devices are created ("allow create new devices"); false: only devices registered
  -- beforehand with this type may claim their credentials, once ("check pre-provisioned devices").
  allow_create  boolean NOT NULL DEFAULT true,
  max_devices   integer CHECK (max_devices IS NULL OR max_devices > 0),
  devices_provisioned integer NOT NULL DEFAULT 0,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz
);

-- Which devices provisioned themselves, with which key, when and from where.
CREATE TABLE device_provisioning (
  device_id         integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  key_id            integer REFERENCES provision_keys (id) ON DELETE SET NULL,
  credentials_type  text NOT NULL,
  address           text,
  provisioned_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_provisioning_key ON device_provisioning (key_id);
