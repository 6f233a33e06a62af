-- Phase 53c: the indexes behind the fixed inbox counts. Applied apart from the
-- migrations so that the legacy arms run on the schema production had.
--
-- The fixed counts probe this index once per lead for its latest message; carrying the two
-- columns the counts read (direction, is_read) makes each probe an index-only scan, with no
-- random read of the messages heap (the heap is larger than shared_buffers at the default
-- scale). Neither column is ever updated, so no HOT update is lost to it.
CREATE INDEX IF NOT EXISTS messages_workspace_lead_sent_idx
    ON messages (workspace_id, lead_id, sent_at DESC) INCLUDE (direction, is_read);
CREATE INDEX IF NOT EXISTS leads_workspace_status_idx
    ON leads (workspace_id, status);
