-- Server secrets shared by every node, each created once by the first node to need it (core/registry.ts
-- loadSecret: INSERT … ON CONFLICT DO NOTHING, so nodes starting together agree on one value).
-- `token_lookup`: the HMAC-SHA-256 key of devices.token_lookup (core/credentials.ts tokenLookup).
CREATE TABLE platform_secrets (
  name        text PRIMARY KEY,
  value       bytea NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- devices.token_lookup now holds `k1.` and a keyed HMAC of the token. Rows written before hold an
-- unkeyed 64-bit SHA-256 prefix; they cannot be recomputed without the tokens, so they are still
-- accepted and rewritten to the keyed form when their device next authenticates (or its token is
-- rotated).
COMMENT ON COLUMN devices.token_lookup IS 'k1.<HMAC-SHA-256 of the token under platform_secrets.token_lookup, 132 bits>; legacy rows: 16 hex digits of SHA-256, rewritten at the next successful authentication';
