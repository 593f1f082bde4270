-- Access for agencies and staff (core/access/): roles, API keys, and the audit log.

-- A role is a named set of permissions (core/access/permissions.ts). Built-in roles are written
-- at start; `admin` cannot be changed.
CREATE TABLE roles (
  name         text PRIMARY KEY,
  description  text NOT NULL DEFAULT '',
  permissions  text[] NOT NULL,
  builtin      boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- An API key: the key itself is never stored, only its SHA-256 (a key is 256 random bits, so a
-- fast hash is enough: there is nothing to guess offline). `scope` is the parsed scope input
-- (core/access/scope.ts): {domains?, towns?, area?}.
CREATE TABLE api_keys (
  id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text NOT NULL,
  owner         text NOT NULL,
  roles         text[] NOT NULL,
  scope         jsonb NOT NULL DEFAULT '{}',
  key_hash      bytea NOT NULL UNIQUE,
  key_prefix    text NOT NULL,              -- the first characters of the key, to tell keys apart in lists
  created_by    text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz,
  revoked_at    timestamptz,
  rotated_at    timestamptz,
  last_used_at  timestamptz
);
CREATE INDEX api_keys_owner ON api_keys (owner);
