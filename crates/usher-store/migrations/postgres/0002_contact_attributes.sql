-- Contacts carry free-form attributes (a JSON object of string values), set through the API.
ALTER TABLE contacts ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
