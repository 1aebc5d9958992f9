-- An assignment's event names its decision instead of carrying a second copy of the trace
-- (the trace of a team of 50 is several kilobytes): reading the log joins it back in.
ALTER TABLE events ADD COLUMN decision_id BIGINT;
