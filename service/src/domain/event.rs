//! An email provider event as the service reads it: its type, the parsed and validated body,
//! its dedupe key, and the GHL contact body an `EMAIL_SENT` leads to.

use chrono::{DateTime, Utc};
use serde_json::json;

/// An event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Sent,
    Opened,
    Replied,
    Bounced,
    /// Acknowledged and ignored (providers add types; refusing them would make them retry).
    Unknown(String),
}

impl EventKind {
    /// The type as the provider names it; unknown types are all `OTHER` (a metrics label must
    /// not take whatever a sender writes).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Sent => "EMAIL_SENT",
            EventKind::Opened => "EMAIL_OPENED",
            EventKind::Replied => "EMAIL_REPLIED",
            EventKind::Bounced => "EMAIL_BOUNCED",
            EventKind::Unknown(_) => "OTHER",
        }
    }
}

/// An event as the service uses it: [`incident_wire::EmailEvent`] after [`validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmailEvent {
    pub event_id: String,
    pub kind: EventKind,
    pub workspace_id: i64,
    pub lead_email: String,
    pub occurred_at: DateTime<Utc>,
    pub subject: String,
}

impl EmailEvent {
    /// The dedupe key: provider, event type and provider event id (`email:EMAIL_SENT:evt_1`).
    /// The same id under two types is two events. Logged instead of raw identifiers.
    pub fn dedupe_key(&self) -> String {
        format!("email:{}:{}", self.kind.as_str(), self.event_id)
    }
}

/// Parses a webhook body as the wire's [`incident_wire::EmailEvent`], then validates it for
/// what the schema and Postgres accept. The error names the field and what was wrong with it.
pub fn parse(body: &[u8]) -> Result<EmailEvent, String> {
    if !body.trim_ascii_start().starts_with(b"{") {
        // serde would take a struct from an array too; a provider sends an object.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => "body must be a JSON object".to_owned(),
                Err(e) => format!("body is not valid JSON: {e}"),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: incident_wire::EmailEvent =
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let inner = e.inner();
            let what = inner.to_string();
            // serde_json appends the position; the field path says more to a sender.
            let what = what.split(" at line ").next().unwrap_or(&what).to_owned();
            match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("body is not valid JSON: {what}")
                }
                _ if e.path().to_string() == "." => what,
                _ => format!("field `{}`: {what}", e.path()),
            }
        })?;
    validate(raw)
}

/// The checks the type system does not make: lengths, ranges, formats, and no NUL character
/// (Postgres refuses `\u0000` in text, which would otherwise surface as a 500).
pub fn validate(raw: incident_wire::EmailEvent) -> Result<EmailEvent, String> {
    let text = |field: &str, value: &str, max: usize| -> Result<(), String> {
        if value.trim().is_empty() {
            Err(format!("field `{field}` is empty"))
        } else if value.len() > max {
            Err(format!("field `{field}` is longer than {max} bytes"))
        } else if value.contains('\0') {
            Err(format!("field `{field}` contains a NUL character"))
        } else {
            Ok(())
        }
    };
    text("event_id", &raw.event_id, 200)?;
    text("type", &raw.kind, 64)?;
    text("lead_email", &raw.lead_email, 320)?;
    text("occurred_at", &raw.occurred_at, 64)?;
    if raw.workspace_id <= 0 {
        return Err(format!(
            "field `workspace_id` must be a positive integer, got {}",
            raw.workspace_id
        ));
    }
    if !raw.lead_email.contains('@') {
        return Err("field `lead_email` is not an email address".into());
    }
    let occurred_at = DateTime::parse_from_rfc3339(&raw.occurred_at)
        .map_err(|_| "field `occurred_at` must be an RFC 3339 timestamp".to_owned())?
        .with_timezone(&Utc);
    let subject = raw.subject.unwrap_or_default();
    if subject.len() > 1000 {
        return Err("field `subject` is longer than 1000 bytes".into());
    }
    if subject.contains('\0') {
        return Err("field `subject` contains a NUL character".into());
    }
    let kind = match raw.kind.as_str() {
        "EMAIL_SENT" => EventKind::Sent,
        "EMAIL_OPENED" => EventKind::Opened,
        "EMAIL_REPLIED" => EventKind::Replied,
        "EMAIL_BOUNCED" => EventKind::Bounced,
        other => EventKind::Unknown(other.to_owned()),
    };
    Ok(EmailEvent {
        event_id: raw.event_id,
        kind,
        workspace_id: raw.workspace_id,
        lead_email: raw.lead_email,
        occurred_at,
        subject,
    })
}

/// The GHL contact upsert an `EMAIL_SENT` causes: the lead's email leaves only as a one-way
/// hash.
pub fn contact_body(ev: &EmailEvent) -> serde_json::Value {
    // The idempotency key lets the provider (and the harness's count of its calls) tell a
    // repeated call from a new one; hashed, as every identifier leaving the service.
    json!({
        "workspace_id": ev.workspace_id,
        "email_hash": incident_wire::redact(&ev.lead_email),
        "idempotency_key": incident_wire::redact(&ev.dedupe_key()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn valid() -> Value {
        json!({
            "event_id": "evt_1", "type": "EMAIL_SENT", "workspace_id": 3,
            "lead_email": "ann@example.test", "occurred_at": "2026-01-23T17:51:00Z"
        })
    }

    #[test]
    fn a_valid_event_parses() {
        let ev = parse(&body(valid())).unwrap();
        assert_eq!(ev.kind, EventKind::Sent);
        assert_eq!(ev.workspace_id, 3);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                "event_id",
                Value::Null,
                "field `event_id`: invalid type: null",
            ),
            (
                "workspace_id",
                json!("3"),
                "field `workspace_id`: invalid type: string \"3\", expected i64",
            ),
            (
                "workspace_id",
                json!(-1),
                "field `workspace_id` must be a positive integer, got -1",
            ),
            (
                "lead_email",
                json!("nobody"),
                "`lead_email` is not an email address",
            ),
            (
                "occurred_at",
                json!("yesterday"),
                "`occurred_at` must be an RFC 3339 timestamp",
            ),
            ("type", json!(7), "field `type`: invalid type: integer `7`"),
            (
                "subject",
                json!(["x"]),
                "field `subject`: invalid type: sequence",
            ),
            (
                "event_id",
                json!("a\u{0}b"),
                "field `event_id` contains a NUL",
            ),
            (
                "subject",
                json!("a\u{0}b"),
                "field `subject` contains a NUL",
            ),
        ];
        for (field, value, expected) in cases {
            let mut v = valid();
            v[field] = value;
            let err = parse(&body(v)).unwrap_err();
            assert!(err.contains(expected), "{field}: {err}");
        }
    }

    #[test]
    fn unknown_types_parse_as_unknown() {
        let mut v = valid();
        v["type"] = json!("EMAIL_CLICKED");
        assert_eq!(
            parse(&body(v)).unwrap().kind,
            EventKind::Unknown("EMAIL_CLICKED".into())
        );
    }

    #[test]
    fn non_json_and_non_objects_are_refused() {
        assert!(parse(b"{not json").unwrap_err().contains("not valid JSON"));
        assert!(parse(b"[1,2]").unwrap_err().contains("JSON object"));
        let missing = parse(br#"{"type":"EMAIL_SENT"}"#).unwrap_err();
        assert!(missing.contains("missing field `event_id`"), "{missing}");
    }
}
