-- Kept in step with PostgreSQL, where commands leave their events here for the sequencer.
-- SQLite has one writer, so a command numbers its events itself and this table stays empty.
CREATE TABLE pending_events (
    id INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    conversation_id INTEGER,
    agent_id INTEGER,
    team_id INTEGER,
    decision_id INTEGER,
    data TEXT NOT NULL
);
CREATE INDEX pending_events_workspace ON pending_events (workspace_id, id);
