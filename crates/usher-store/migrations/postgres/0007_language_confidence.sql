-- A contact's language detected from a message carries the detection's confidence, in
-- thousandths (NULL when the channel, an agent or the API gave the language).
ALTER TABLE contacts ADD COLUMN language_confidence BIGINT;
