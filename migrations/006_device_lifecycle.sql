-- Device lifecycle and connection management (物联网联接管理): labels, gateways and their
-- sub-devices, MQTT basic credentials, and each device's connection state.

ALTER TABLE devices
  ADD COLUMN label              text,
  ADD COLUMN is_gateway         boolean NOT NULL DEFAULT false,
  -- A sub-device created by (or connected through) a gateway.
  ADD COLUMN gateway_id         integer REFERENCES devices (id) ON DELETE SET NULL,
  -- MQTT basic credentials, as ThingsBoard allows them: a client id alone, a username and
  -- password, or all three. The password is stored only as a salted scrypt hash.
  ADD COLUMN mqtt_client_id     text,
  ADD COLUMN mqtt_username      text,
  ADD COLUMN mqtt_password_hash text,
  ADD CONSTRAINT devices_basic_password CHECK ((mqtt_username IS NULL) = (mqtt_password_hash IS NULL));

-- A client id alone identifies a device (scheme "client id only"); a username must be unique.
CREATE UNIQUE INDEX devices_mqtt_client_id_only ON devices (mqtt_client_id) WHERE mqtt_client_id IS NOT NULL AND mqtt_username IS NULL;
CREATE UNIQUE INDEX devices_mqtt_username ON devices (mqtt_username) WHERE mqtt_username IS NOT NULL;
CREATE INDEX devices_gateway ON devices (gateway_id) WHERE gateway_id IS NOT NULL;
CREATE INDEX devices_name_prefix ON devices (name text_pattern_ops);
CREATE INDEX devices_location ON devices (lat, lng) WHERE lat IS NOT NULL;

-- Current connection state, one row per device that ever connected (events keep the history).
CREATE TABLE device_connectivity (
  device_id               integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  online                  boolean NOT NULL,
  last_seen               timestamptz,
  last_connect_at         timestamptz,
  last_connect_address    text,
  last_connect_client_id  text,
  last_disconnect_at      timestamptz,
  last_disconnect_reason  text,
  updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_connectivity_online ON device_connectivity (online);
