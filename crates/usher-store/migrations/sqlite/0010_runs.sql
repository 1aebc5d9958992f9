-- Workflow runs: the engine's state and the effects it asked for that are not carried out
-- yet (each is carried out in the transaction that also takes it off the list, so each
-- happens once, crash or not), and when the run next needs attention (a due timer, or an
-- effect waiting). Their history is kept step by step.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    workflow_id BIGINT NOT NULL REFERENCES workflows(id),
    version BIGINT NOT NULL,
    conversation_id BIGINT NOT NULL REFERENCES conversations(id),
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    wake_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX runs_wake ON runs (wake_at);
CREATE INDEX runs_conversation ON runs (conversation_id, id);

CREATE TABLE run_steps (
    run_id BIGINT NOT NULL REFERENCES runs(id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    input TEXT NOT NULL,
    effects TEXT NOT NULL,
    trace TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
