-- The web console's people: an e-mail and a password (an Argon2id hash), a role (the API's
-- roles) and, for agents, the agent they are. Sessions are random tokens kept as SHA-256
-- hashes, like API tokens, with an expiry.
CREATE TABLE logins (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    agent_id BIGINT REFERENCES agents(id),
    created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    login_id BIGINT NOT NULL REFERENCES logins(id),
    workspace_id BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
