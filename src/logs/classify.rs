//! What a log row stands for: which endpoint of the reference service a production request maps
//! to (a path map the user can extend), and which error category a row's message or status
//! belongs to.

use std::path::Path;

use incident_wire::route;
use serde::{Deserialize, Serialize};

use crate::model::EndpointKind;

/// An endpoint of the reference service, as a replay sends it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    pub endpoint: EndpointKind,
    /// Webhooks: the event type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl Target {
    /// The label recordings and reports use for this endpoint (`POST /api/webhooks/email`).
    pub fn label(&self) -> String {
        match self.endpoint {
            EndpointKind::Webhook => incident_wire::endpoint_label(
                "POST",
                incident_wire::WEBHOOK_PATH,
                Some(self.event.as_deref().unwrap_or("EMAIL_SENT")),
            ),
            EndpointKind::InboxPage => route::INBOX_PAGE.label.into(),
            EndpointKind::InboxCounts => route::INBOX_COUNTS.label.into(),
            EndpointKind::AiDraft => route::AI_DRAFT.label.into(),
            EndpointKind::CronBackgroundJobs => format!("GET {}", route::CRON_BACKGROUND_JOBS.path),
            EndpointKind::CronFollowups => format!("GET {}", route::CRON_FOLLOWUPS.path),
        }
    }
}

/// One line of the path map: requests with this method (any when absent) and path (exact, or a
/// prefix when it ends in `*`) replay as `endpoint`, or are left out on purpose (`ignore`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    #[serde(default)]
    pub endpoint: Option<EndpointKind>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub ignore: bool,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    To(Target),
    /// A rule says to leave it out (counted and listed as ignored).
    Ignored,
    /// No rule matches (counted and listed; never dropped silently).
    Unmatched,
}

/// The path map: the user's rules first, then the defaults, first match wins.
#[derive(Debug, Clone)]
pub struct PathMap {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    map: Vec<Rule>,
}

/// The defaults: the production routes of the incident, as the seed names them. Next.js server
/// actions log as `POST` to the page's path: `POST /` is the sidebar counts and initial data.
pub const DEFAULT_MAP: &str = r#"
[[map]]
method = "POST"
path = "/api/webhooks/email"
endpoint = "webhook"
event = "EMAIL_SENT"

[[map]]
method = "GET"
path = "/"
endpoint = "inbox_page"

[[map]]
method = "POST"
path = "/"
endpoint = "inbox_counts"

[[map]]
path = "/api/actions/inbox-counts"
endpoint = "inbox_counts"

[[map]]
path = "/api/actions/ai-draft"
endpoint = "ai_draft"

[[map]]
path = "/api/cron/background-jobs"
endpoint = "cron_background_jobs"

[[map]]
path = "/api/cron/followups"
endpoint = "cron_followups"

[[map]]
path = "/_next/*"
ignore = true

[[map]]
path = "/favicon.ico"
ignore = true

[[map]]
method = "GET"
path = "/metrics"
ignore = true
"#;

impl PathMap {
    /// The defaults alone.
    pub fn defaults() -> Self {
        Self::parse(DEFAULT_MAP).expect("the default path map parses")
    }

    /// The user's rules from `path` (TOML, `[[map]]` entries), ahead of the defaults.
    pub fn with_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut user = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        user.rules.extend(Self::defaults().rules);
        Ok(user)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: MapFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, r) in file.map.iter().enumerate() {
            let n = i + 1;
            if r.ignore == r.endpoint.is_some() {
                return Err(format!(
                    "[[map]] entry {n} (path {:?}): give either `endpoint` or `ignore = true`",
                    r.path
                ));
            }
            if !r.path.starts_with('/') {
                return Err(format!(
                    "[[map]] entry {n}: path {:?} must start with `/`",
                    r.path
                ));
            }
            if r.event.is_some() && r.endpoint != Some(EndpointKind::Webhook) {
                return Err(format!(
                    "[[map]] entry {n} (path {:?}): `event` is for `endpoint = \"webhook\"` only",
                    r.path
                ));
            }
        }
        Ok(Self { rules: file.map })
    }

    /// Where a request with this method and path goes.
    pub fn map(&self, method: Option<&str>, path: &str) -> Mapped {
        let hit = self.rules.iter().find(|r| {
            let method_ok = match (&r.method, method) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                // The export did not say: a rule for one method still matches.
                (Some(_), None) => true,
            };
            let path_ok = match r.path.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == r.path,
            };
            method_ok && path_ok
        });
        match hit {
            None => Mapped::Unmatched,
            Some(r) if r.ignore => Mapped::Ignored,
            Some(r) => Mapped::To(Target {
                endpoint: r.endpoint.expect("checked on parse"),
                event: match r.endpoint {
                    Some(EndpointKind::Webhook) => {
                        Some(r.event.clone().unwrap_or_else(|| "EMAIL_SENT".into()))
                    }
                    _ => None,
                },
            }),
        }
    }
}

/// How urgent a category is, as the seed's fix list ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Priority {
    P0,
    P1,
    P2,
    /// Errors no category describes: listed, not ranked.
    Unranked,
}

/// An error category: its name (as in logs, metrics and reports), its priority and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    pub name: &'static str,
    pub priority: Priority,
    pub why: &'static str,
    /// Lower-case fragments of a message that put a row in this category.
    signatures: &'static [&'static str],
}

/// The categories, in the order a row is tested against them (first match wins).
pub const CATEGORIES: &[Category] = &[
    Category {
        name: "function_timeout",
        priority: Priority::P0,
        why: "requests cut off at the function limit (504): the webhook burst holds every pooled connection and the rest of the app waits behind it",
        signatures: &["function_invocation_timeout", "task timed out after", "function timed out"],
    },
    Category {
        name: "db_pool_wait",
        priority: Priority::P0,
        why: "requests that waited for a pooled connection and gave up: the pool is saturated",
        signatures: &[
            "timed out fetching a new connection",
            "pool timed out",
            "pooltimedout",
            "timeout acquiring",
            "acquire timeout",
            "too many clients",
            "remaining connection slots",
        ],
    },
    Category {
        name: "db_timeout",
        priority: Priority::P1,
        why: "queries cancelled by the statement timeout: the inbox counts aggregate too much",
        signatures: &["statement timeout", "57014", "canceling statement"],
    },
    Category {
        name: "expected_unauth",
        priority: Priority::P1,
        why: "signed-out browsers logged at error level: noise that hides real errors, and redirect churn",
        signatures: &["refresh_token_not_found", "aborterror", "auth session missing"],
    },
    Category {
        name: "ai_truncated",
        priority: Priority::P2,
        why: "the AI verifier's answer was cut off: must degrade to an unverified draft",
        signatures: &["truncated", "finish_reason: length", "max_tokens"],
    },
    Category {
        name: "ai_timeout",
        priority: Priority::P2,
        why: "the AI verifier timed out: must be bounded and never block a core path",
        signatures: &["verifier timed out", "verifier timeout", "ai timeout", "draft timed out"],
    },
    Category {
        name: "provider_disconnected",
        priority: Priority::P2,
        why: "sends to a disconnected LinkedIn account (Unipile): health-gate them instead of retrying",
        signatures: &["disconnected", "not connected", "reconnect the account"],
    },
    Category {
        name: "provider_invalid_recipient",
        priority: Priority::P2,
        why: "sends to a recipient the provider refuses: classify and do not retry",
        signatures: &["invalid recipient", "invalid_recipient", "recipient not found"],
    },
    Category {
        name: "provider_rate_limited",
        priority: Priority::P2,
        why: "provider 429s: back off with jitter and a retry cap",
        signatures: &["rate limit", "too many requests", "status 429"],
    },
    Category {
        name: "ledger_warning",
        priority: Priority::P2,
        why: "best-effort ledger increments in interactive transactions: make them one atomic statement",
        signatures: &["ledger"],
    },
];

/// The category of errors nothing else describes (grouped by their message's shape).
pub const OTHER: &str = "other_error";

/// One automaton over every category's signatures (case-insensitive), built once: a row's
/// message is scanned once, whatever the number of signatures.
fn signatures() -> &'static (aho_corasick::AhoCorasick, Vec<usize>) {
    static SIGNATURES: std::sync::OnceLock<(aho_corasick::AhoCorasick, Vec<usize>)> =
        std::sync::OnceLock::new();
    SIGNATURES.get_or_init(|| {
        let mut patterns = Vec::new();
        let mut owner = Vec::new();
        for (i, c) in CATEGORIES.iter().enumerate() {
            for s in c.signatures {
                patterns.push(*s);
                owner.push(i);
            }
        }
        let ac = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(patterns)
            .expect("the signatures make an automaton");
        (ac, owner)
    })
}

/// The category of a row: by its message first (the first category in [`CATEGORIES`] order
/// with a signature in it), then a 504, then an error level or a 5xx with no known message.
/// `None` for rows that are not errors.
pub fn categorize(message: &str, status: Option<u16>, level: Option<&str>) -> Option<&'static str> {
    if !message.is_empty() {
        let (ac, owner) = signatures();
        if let Some(first) = ac
            .find_overlapping_iter(message)
            .map(|m| owner[m.pattern().as_usize()])
            .min()
        {
            return Some(CATEGORIES[first].name);
        }
    }
    if status == Some(504) {
        return Some("function_timeout");
    }
    let error_level = matches!(level, Some("error" | "fatal"));
    (error_level || status.is_some_and(|s| s >= 500)).then_some(OTHER)
}

/// The category named `name`.
pub fn category(name: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.name == name)
}

/// A message with what could identify a client taken out: e-mail addresses, long hex or UUID
/// ids and bare integers of 5 digits or more (lead, contact, phone numbers) become placeholders;
/// numbers with a unit or a decimal point (`20000ms`, `60.02`) stay. Cut to 120 characters.
/// Used for the examples triage prints.
pub fn redact(message: &str) -> String {
    let is_sep = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | '"' | '\'' | ';' | ':' | '(' | ')' | '[' | ']' | '='
            )
    };
    let mut out = String::with_capacity(message.len().min(140));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let w = word.as_str();
        let digits = w.chars().filter(char::is_ascii_digit).count();
        let hexish = w.len() >= 16 && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if w.contains('@') {
            out.push_str("<email>");
        } else if hexish
            || (digits >= 5
                && w.chars()
                    .all(|c| c.is_ascii_digit() || c == '+' || c == '-'))
        {
            out.push_str("<id>");
        } else {
            out.push_str(w);
        }
        word.clear();
    };
    for c in message.chars() {
        if is_sep(c) {
            flush(&mut word, &mut out);
            out.push(if c == '\n' { ' ' } else { c });
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    if out.chars().count() > 120 {
        format!("{}…", out.chars().take(120).collect::<String>())
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_map_sends_production_routes_to_the_reference_endpoints() {
        let map = PathMap::defaults();
        let to = |m, p| match map.map(m, p) {
            Mapped::To(t) => t.label(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            to(Some("POST"), "/api/webhooks/email"),
            "POST /api/webhooks/email"
        );
        assert_eq!(to(Some("POST"), "/"), "POST /api/actions/inbox-counts");
        assert_eq!(to(Some("GET"), "/"), "GET /");
        assert_eq!(to(None, "/api/cron/followups"), "GET /api/cron/followups");
        assert_eq!(map.map(Some("GET"), "/_next/static/x.js"), Mapped::Ignored);
        assert_eq!(map.map(Some("GET"), "/settings"), Mapped::Unmatched);
    }

    #[test]
    fn a_user_map_goes_first_and_bad_entries_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("map.toml");
        std::fs::write(&file, "[[map]]\npath = \"/inbox*\"\nendpoint = \"inbox_page\"\n[[map]]\npath = \"/\"\nignore = true\n").unwrap();
        let map = PathMap::with_file(&file).unwrap();
        assert!(matches!(map.map(Some("GET"), "/inbox/42"), Mapped::To(_)));
        assert_eq!(
            map.map(Some("GET"), "/"),
            Mapped::Ignored,
            "the user's rule wins"
        );
        std::fs::write(&file, "[[map]]\npath = \"/x\"\n").unwrap();
        let err = PathMap::with_file(&file).unwrap_err();
        assert!(
            err.contains("map.toml: [[map]] entry 1 (path \"/x\"): give either"),
            "{err}"
        );
        std::fs::write(&file, "[[map]]\npath = \"/x\"\nendpoint = \"nope\"\n").unwrap();
        let err = PathMap::with_file(&file).unwrap_err();
        assert!(err.contains("map.toml") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn categories_from_messages_and_statuses() {
        assert_eq!(
            categorize("Task timed out after 60.02 seconds", None, None),
            Some("function_timeout")
        );
        assert_eq!(categorize("", Some(504), None), Some("function_timeout"));
        assert_eq!(
            categorize(
                "error: canceling statement due to statement timeout",
                Some(500),
                None
            ),
            Some("db_timeout")
        );
        assert_eq!(
            categorize(
                "Timed out fetching a new connection from the connection pool",
                None,
                Some("error")
            ),
            Some("db_pool_wait")
        );
        assert_eq!(
            categorize(
                "AuthApiError: refresh_token_not_found",
                Some(200),
                Some("error")
            ),
            Some("expected_unauth")
        );
        assert_eq!(
            categorize("AbortError: This operation was aborted", None, None),
            Some("expected_unauth")
        );
        assert_eq!(
            categorize(
                "[AI] Step 3 verifier timed out after 20000ms",
                None,
                Some("warning")
            ),
            Some("ai_timeout")
        );
        assert_eq!(
            categorize(
                "[AI] verifier output truncated (finish_reason: length)",
                None,
                None
            ),
            Some("ai_truncated")
        );
        assert_eq!(
            categorize("Unipile: account disconnected", None, None),
            Some("provider_disconnected")
        );
        assert_eq!(
            categorize("something odd", None, Some("error")),
            Some(OTHER)
        );
        assert_eq!(categorize("GET / 200", Some(200), None), None);
    }

    #[test]
    fn redaction_takes_out_what_names_a_client() {
        let r = redact("send to jane@corp.example failed for lead 123456, id 9f1c2d3e-4b5a-6789-abcd-ef0123456789 (+15551234567)");
        assert_eq!(r, "send to <email> failed for lead <id>, id <id> (<id>)");
        assert_eq!(
            redact("Task timed out after 60.02 seconds; retry in 20000ms"),
            "Task timed out after 60.02 seconds; retry in 20000ms"
        );
    }
}
