-- Phase 53c: the indexes behind the fixed inbox counts. Applied apart from the
-- migrations so that the legacy arms run on the schema production had.
CREATE INDEX IF NOT EXISTS messages_workspace_lead_sent_idx
    ON messages (workspace_id, lead_id, sent_at DESC);
CREATE INDEX IF NOT EXISTS leads_workspace_status_idx
    ON leads (workspace_id, status);
