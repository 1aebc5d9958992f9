-- Outbound webhooks: subscriptions to the event log, and their deliveries. A dispatcher moves
-- the log past each subscription's cursor into deliveries in one transaction (the log is the
-- outbox: nothing committed is lost, even if the process dies before sending); senders
-- retry with backoff and pause a subscription that keeps failing.
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    status TEXT NOT NULL,
    cursor_seq BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    paused_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_workspace ON webhooks (workspace_id, id);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    webhook_id BIGINT NOT NULL REFERENCES webhooks(id),
    workspace_id BIGINT NOT NULL,
    event_seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);

CREATE TABLE delivery_attempts (
    delivery_id BIGINT NOT NULL REFERENCES deliveries(id),
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status BIGINT,
    error TEXT,
    millis BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
