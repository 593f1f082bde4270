-- Device claiming (core/claims.ts), as in ThingsBoard: a device (or its gateway) asks to be
-- claimed with a secret for a while; an agency that presents the secret in time becomes its owner.

-- The pending claim request of a device: at most one; a new request replaces it. The secret is
-- never stored, only its scrypt hash (core/credentials.ts hashSecret).
CREATE TABLE device_claim_requests (
  device_id    integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  secret_hash  text NOT NULL,
  expires_at   timestamptz NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  via_gateway  integer REFERENCES devices (id) ON DELETE SET NULL   -- asked by its gateway (v1/gateway/claim)
);
CREATE INDEX device_claim_requests_expiry ON device_claim_requests (expires_at);

-- Who owns a claimed device: an agency (the `owner` of API keys and OpenID identities). Its
-- principals see the device and its data whatever their scope (core/access/access.ts).
CREATE TABLE device_owners (
  device_id  integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
  owner      text NOT NULL,
  claimed_by text NOT NULL,          -- the principal that claimed it (key:<id>, oidc:<subject>)
  claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_owners_owner ON device_owners (owner);

-- Installations whose built-in roles were written before this permission existed.
UPDATE roles SET permissions = array_append(permissions, 'devices:claim')
 WHERE builtin AND name IN ('agency', 'operator') AND NOT ('devices:claim' = ANY (permissions));
