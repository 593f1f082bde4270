-- The audit log (core/audit.ts): every authenticated request, every refused attempt (401/403/429)
-- and every live-stream subscription — who, what, the result, when and from where. Never a
-- secret: no credential, no query string, no body; only the essentials parsed from a request
-- (an area's kind and extent, not its coordinates; the window; keys; domains; …).
--
-- Written in batches (one INSERT … SELECT FROM unnest per flush). Pruned by the retention job
-- after AUDIT_RETENTION_DAYS. On TimescaleDB it is a hypertable in 1-day chunks, so pruning drops
-- whole days instead of deleting a year's worth of rows one by one; `id` is then not a primary key
-- (a hypertable's unique indexes must include its time column) but stays unique, being an identity.
CREATE TABLE audit_log (
  id              bigint GENERATED ALWAYS AS IDENTITY,
  at              timestamptz NOT NULL,            -- when the request arrived
  principal       text,                            -- Principal.id (key:12, oidc:<subject>, bootstrap); null: not authenticated
  principal_name  text,
  owner           text,
  roles           text[] NOT NULL DEFAULT '{}',
  kind            text NOT NULL CHECK (kind IN ('http', 'stream', 'mqtt')),
  method          text,                            -- HTTP method; null for streams
  route           text NOT NULL,                   -- the route pattern (/api/v1/devices/:id), or 'subscribe'
  device_id       integer,                         -- the device a /devices/:id… request or a subscription names
  essentials      jsonb NOT NULL DEFAULT '{}',     -- area, window, keys, domains, types, format, limit, …
  status          integer NOT NULL,                -- HTTP status (499: the client went away before an answer)
  reason          text,                            -- why it was refused or cut short
  rows            integer,                         -- rows answered, when the route says
  bytes           bigint,                          -- body bytes sent
  duration_ms     real,
  source_ip       text,
  user_agent      text
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('audit_log'::regclass, 'at', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
    CREATE INDEX audit_log_id ON audit_log (id);
  ELSE
    ALTER TABLE audit_log ADD PRIMARY KEY (id);
  END IF;
END $$;

-- GET /api/v1/audit answers newest first (id DESC) with filters; retention deletes by `at`.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_principal ON audit_log (principal, id);
CREATE INDEX audit_log_owner ON audit_log (owner, id);
CREATE INDEX audit_log_device ON audit_log (device_id, id) WHERE device_id IS NOT NULL;

-- A key's own request rate limit (core/access/rate-limits.ts syntax: `1200/min`, `50/s`, `off`);
-- null: its roles' limits (RATE_LIMITS).
ALTER TABLE api_keys ADD COLUMN rate_limit text;
