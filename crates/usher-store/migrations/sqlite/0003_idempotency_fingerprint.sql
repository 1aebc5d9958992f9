-- An idempotency key remembers a fingerprint of the request it was first used with, so that
-- the same key with a different request is refused instead of silently answered.
ALTER TABLE idempotency ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
