-- Business-hours calendars and automation workflows (issue 4): a workflow keeps one editable
-- draft and the versions published from it, frozen; runs will name the version they started on.
CREATE TABLE calendars (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    team_id BIGINT REFERENCES teams(id),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX calendars_workspace ON calendars (workspace_id, id);

CREATE TABLE workflows (
    id INTEGER PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 0,
    draft TEXT NOT NULL,
    published_version BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workflows_workspace ON workflows (workspace_id, id);

CREATE TABLE workflow_versions (
    workflow_id BIGINT NOT NULL REFERENCES workflows(id),
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

-- The contact fields a workspace uses (set through the API or saved by workflows), so that a
-- workflow naming a field nobody ever sets is refused at publishing.
CREATE TABLE contact_fields (
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
