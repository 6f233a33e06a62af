-- Dedupe keys are namespaced by event type (provider + type + id): one provider event id for
-- EMAIL_SENT and for EMAIL_OPENED is two events, each applied once, and neither insert fails
-- on the other's row. (Messages keep their key: only EMAIL_SENT stores one.)
DROP INDEX lead_activities_provider_event_id_key;
CREATE UNIQUE INDEX lead_activities_kind_provider_event_id_key
    ON lead_activities (kind, provider_event_id) WHERE provider_event_id IS NOT NULL;
