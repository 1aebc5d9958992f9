-- Channels a workspace talks through (WhatsApp, e-mail, web chat, ...): where inbound
-- conversations go, and the adapter's URL that outbound messages are delivered to (through a
-- webhook subscription the channel owns). A web-chat channel has a public key for its widget.
CREATE TABLE channels (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    team_id BIGINT,
    outbound_url TEXT,
    webhook_id BIGINT,
    public_key TEXT UNIQUE,
    secret TEXT NOT NULL,
    reopen_minutes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX channels_workspace ON channels (workspace_id, id);

-- A conversation remembers the channel it came through; a message, the channel's own id for
-- it, so that an adapter's retry stores nothing twice.
ALTER TABLE conversations ADD COLUMN channel_id BIGINT;
CREATE INDEX conversations_contact ON conversations (contact_id, channel_id, id);
ALTER TABLE messages ADD COLUMN channel_id BIGINT;
ALTER TABLE messages ADD COLUMN channel_message_id TEXT;
CREATE UNIQUE INDEX messages_channel_id ON messages (channel_id, channel_message_id);
ALTER TABLE webhooks ADD COLUMN channel_id BIGINT;

-- Presence that follows the console's connection: one row per live connection (refreshed
-- while it lives, so a node that dies leaves rows that go stale), and on the agent when its
-- last connection went and whether Usher turned it away for it.
CREATE TABLE agent_links (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL,
    agent_id BIGINT NOT NULL REFERENCES agents(id),
    opened_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
CREATE INDEX agent_links_agent ON agent_links (agent_id);
ALTER TABLE agents ADD COLUMN link_gone_at BIGINT;
ALTER TABLE agents ADD COLUMN away_from TEXT;
-- The presence sweep looks for agents whose last link went, every second.
CREATE INDEX agents_link_gone ON agents (link_gone_at);
