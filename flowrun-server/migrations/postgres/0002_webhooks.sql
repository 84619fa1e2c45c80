-- Webhooks. A run may name a URL; when it ends, a delivery row is committed in the same
-- transaction, and deliverers lease due rows (`next_attempt_at`) to send them.
ALTER TABLE runs ADD COLUMN webhook_url TEXT;
CREATE TABLE webhook_deliveries (
    run_id           TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
