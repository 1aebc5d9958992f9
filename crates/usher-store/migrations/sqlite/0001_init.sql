-- Usher's schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql.
CREATE TABLE workspaces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    time_zone TEXT NOT NULL DEFAULT 'UTC',
    event_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    agent_id INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE teams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    strategy TEXT NOT NULL,
    only_online INTEGER NOT NULL,
    when_nobody TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    default_handle_seconds INTEGER NOT NULL,
    rotation TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    status TEXT NOT NULL,
    max_open INTEGER NOT NULL,
    channel_caps TEXT NOT NULL,
    daily_limit INTEGER,
    weight INTEGER NOT NULL,
    skills TEXT NOT NULL,
    languages TEXT NOT NULL,
    open_count INTEGER NOT NULL DEFAULT 0,
    open_by_channel TEXT NOT NULL,
    received_day INTEGER NOT NULL DEFAULT 0,
    received_count INTEGER NOT NULL DEFAULT 0,
    last_assigned_at INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (workspace_id, email)
);

CREATE TABLE team_members (
    team_id INTEGER NOT NULL REFERENCES teams(id),
    agent_id INTEGER NOT NULL REFERENCES agents(id),
    PRIMARY KEY (team_id, agent_id)
);
CREATE INDEX team_members_agent ON team_members (agent_id);

CREATE TABLE contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    channel TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT,
    language TEXT,
    tags TEXT NOT NULL,
    last_agent_id INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (workspace_id, channel, external_id)
);

CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    channel TEXT NOT NULL,
    team_id INTEGER,
    status TEXT NOT NULL,
    assignee_id INTEGER,
    last_assignee_id INTEGER,
    reserved_for INTEGER,
    priority TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,
    request TEXT NOT NULL,
    message TEXT,
    opened_at INTEGER NOT NULL,
    assigned_at INTEGER,
    closed_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX conversations_queue ON conversations (status, team_id, priority_rank, queued_at, id);
CREATE INDEX conversations_reserved ON conversations (status, reserved_for, priority_rank, queued_at, id);
CREATE INDEX conversations_assignee ON conversations (assignee_id);
CREATE INDEX conversations_workspace ON conversations (workspace_id, id);

CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    agent_id INTEGER,
    explanation TEXT NOT NULL,
    trace TEXT NOT NULL
);
CREATE INDEX decisions_conversation ON decisions (conversation_id, id);

CREATE TABLE events (
    workspace_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    conversation_id INTEGER,
    agent_id INTEGER,
    team_id INTEGER,
    data TEXT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);

CREATE TABLE releases (
    team_id INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX releases_team ON releases (team_id, at);

CREATE TABLE idempotency (
    workspace_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    conversation_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
