-- A queued conversation remembers the agents its request names (a dedicated agent with a
-- team to fall back on, the contact's previous agent), so that when such an agent frees up
-- it finds the conversation even in the queue of a team it is not a member of.
ALTER TABLE conversations ADD COLUMN dedicated_id BIGINT;
ALTER TABLE conversations ADD COLUMN previous_id BIGINT;
CREATE INDEX conversations_dedicated ON conversations (status, dedicated_id);
CREATE INDEX conversations_previous ON conversations (status, previous_id);
