-- Device types and the device registry.

CREATE TABLE device_types (
  name        text PRIMARY KEY,
  domain      text NOT NULL,
  definition  jsonb NOT NULL,            -- label, moving, acceptsUndeclaredKeys, keys (see core/device-types.ts)
  builtin     boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
  id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text NOT NULL UNIQUE,
  type          text NOT NULL REFERENCES device_types (name),
  lat           double precision,
  lng           double precision,
  alt           double precision,
  cell          bigint,                  -- H3 resolution-15 cell of the registered location
  -- The access token itself is never stored: token_lookup is a short SHA-256 prefix used to find
  -- the row, token_hash a salted scrypt hash that proves the token (see broker/credentials.ts).
  token_lookup  text NOT NULL UNIQUE,
  token_hash    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CHECK ((lat IS NULL) = (lng IS NULL))
);
CREATE INDEX devices_type ON devices (type);
