-- Messages of a conversation: the contact's (inbound) and the agents' or workflows'
-- (outbound). The first agent message after the assignment is the first response.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    conversation_id BIGINT NOT NULL REFERENCES conversations(id),
    direction TEXT NOT NULL,
    author TEXT NOT NULL,
    agent_id BIGINT,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
ALTER TABLE conversations ADD COLUMN first_response_at BIGINT;
