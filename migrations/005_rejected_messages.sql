-- Messages (or parts of messages) ingest refused, with the raw payload, for operators and device
-- makers to see what a device really sent. Kept for a limited time (ingest/rejections.ts).
CREATE TABLE rejected_messages (
  received_at  timestamptz NOT NULL DEFAULT now(),
  device_id    integer,
  topic        text NOT NULL,
  reasons      text[] NOT NULL,          -- distinct reasons, for filtering
  errors       jsonb NOT NULL,           -- [{"reason", "key", "detail"}, ...]
  stored       integer NOT NULL,         -- readings of the same message that were stored
  payload      bytea NOT NULL,
  payload_size integer NOT NULL          -- the original size (payload may be truncated)
);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('rejected_messages', 'received_at', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
  END IF;
END $$;

CREATE INDEX rejected_messages_received ON rejected_messages (received_at DESC);
CREATE INDEX rejected_messages_device ON rejected_messages (device_id, received_at DESC);
