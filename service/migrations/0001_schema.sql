-- The reference domain as it stood before Phase 53 (the "legacy" world).
-- Phase 53's supporting indexes live apart, in sql/phase53_indexes.sql, so an
-- arm can run without them. Tables the fixes need (job queue, counts cache)
-- exist here because a deploy ships them before any flag is turned on.

CREATE TABLE workspaces (
    id                  bigint PRIMARY KEY,
    name                text        NOT NULL,
    -- Unipile (LinkedIn) connection health as last reported by the provider.
    unipile_status      text        NOT NULL DEFAULT 'connected'
                        CHECK (unipile_status IN ('connected', 'disconnected')),
    unipile_checked_at  timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE leads (
    id               bigserial   PRIMARY KEY,
    workspace_id     bigint      NOT NULL REFERENCES workspaces (id),
    email            text        NOT NULL,
    first_name       text        NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('new', 'contacted', 'replied', 'interested',
                                       'not_interested', 'meeting_booked', 'bounced')),
    sentiment        text        CHECK (sentiment IN ('positive', 'neutral', 'negative')),
    emails_sent      integer     NOT NULL DEFAULT 0,
    emails_opened    integer     NOT NULL DEFAULT 0,
    last_message_at  timestamptz,
    ghl_contact_id   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, email)
);

CREATE TABLE messages (
    id                 bigserial   PRIMARY KEY,
    workspace_id       bigint      NOT NULL,
    lead_id            bigint      NOT NULL,
    direction          text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    channel            text        NOT NULL CHECK (channel IN ('email', 'linkedin')),
    -- Webhook-created messages carry the provider's event id; seeded history has none.
    provider_event_id  text,
    subject            text        NOT NULL,
    body               text        NOT NULL,
    is_read            boolean     NOT NULL DEFAULT false,
    sent_at            timestamptz NOT NULL
);
-- Exactly-once for webhook effects, in the legacy and the fixed path alike.
CREATE UNIQUE INDEX messages_provider_event_id_key
    ON messages (provider_event_id) WHERE provider_event_id IS NOT NULL;

CREATE TABLE lead_activities (
    id                 bigserial   PRIMARY KEY,
    workspace_id       bigint      NOT NULL,
    lead_id            bigint      NOT NULL,
    kind               text        NOT NULL,
    provider_event_id  text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
-- Exactly-once for the activity-only events (opened, bounced).
CREATE UNIQUE INDEX lead_activities_provider_event_id_key
    ON lead_activities (provider_event_id) WHERE provider_event_id IS NOT NULL;

-- Postgres job queue (Phase 53b): one idempotent insert on the webhook hot path.
CREATE TABLE background_jobs (
    id            bigserial   PRIMARY KEY,
    kind          text        NOT NULL,
    dedupe_key    text        NOT NULL UNIQUE,
    payload       jsonb       NOT NULL,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts      integer     NOT NULL DEFAULT 0,
    run_after     timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX background_jobs_ready_idx ON background_jobs (run_after) WHERE status IN ('queued', 'running');

-- Per-scope sidebar counts (Phase 53c), refreshed by the worker, served stale on timeout.
CREATE TABLE inbox_counts_cache (
    scope_key      text        PRIMARY KEY,
    -- The scope's workspaces, so the worker can recompute it (the key is a one-way hash).
    workspace_ids  bigint[]    NOT NULL,
    counts         jsonb       NOT NULL,
    computed_at    timestamptz NOT NULL
);

CREATE TABLE followup_tasks (
    id                    bigserial   PRIMARY KEY,
    workspace_id          bigint      NOT NULL,
    lead_id               bigint      NOT NULL,
    channel               text        NOT NULL CHECK (channel IN ('email', 'linkedin')),
    due_at                timestamptz NOT NULL,
    status                text        NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts              integer     NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz,
    last_error_category   text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX followup_tasks_due_idx ON followup_tasks (due_at) WHERE status = 'pending';

CREATE TABLE slot_offer_ledger (
    workspace_id  bigint  NOT NULL,
    slot_date     date    NOT NULL,
    offered       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, slot_date)
);

CREATE TABLE ai_drafts (
    id              bigserial   PRIMARY KEY,
    workspace_id    bigint      NOT NULL,
    lead_id         bigint      NOT NULL,
    draft           text        NOT NULL,
    verified        boolean     NOT NULL,
    error_category  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
