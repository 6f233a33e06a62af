//! What each stream sends: signed webhooks with unique dedupe ids, page and action requests
//! under sessions (some signed out, to produce expected-unauthenticated traffic), cron ticks.
//! Every choice derives from the stream's sequence number, so a run is repeatable.

use incident_wire::{
    mint_access, mint_refresh, route, sign_webhook, Session, ACCESS_COOKIE, REFRESH_COOKIE,
};
use serde_json::json;

/// The sessions a stream's requests carry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// Key the service checks tokens with.
    pub secret: String,
    /// Workspaces in the dataset (ids 1..=workspaces).
    pub workspaces: u32,
    /// Workspaces each user sees (an agency view when > 1).
    pub scope_workspaces: u32,
    /// Distinct users.
    pub users: u32,
    /// Percentage of requests from signed-out browsers (no usable token).
    pub signed_out_pct: f64,
}

/// What a stream sends.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Endpoint {
    /// `POST /api/webhooks/email`, HMAC-signed, one unique event id per request.
    EmailWebhook {
        event: String,
        secret: String,
        workspaces: u32,
        leads: u32,
    },
    /// `GET /`.
    InboxPage { sessions: Sessions },
    /// `POST /api/actions/inbox-counts`.
    InboxCounts { sessions: Sessions },
    /// `POST /api/actions/ai-draft` for a lead in the user's scope.
    AiDraft { sessions: Sessions },
    /// A cron route with its bearer secret.
    Cron { path: String, secret: String },
}

/// One concrete request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The dedupe id, for `EMAIL_SENT` webhooks (the invariant's "acknowledged" set).
    pub dedupe_id: Option<String>,
}

/// A cheap, well-mixed hash of a sequence number (splitmix64).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Endpoint {
    /// The endpoint label used in recordings and reports, e.g. `POST /api/webhooks/email`.
    pub fn label(&self) -> String {
        match self {
            Endpoint::EmailWebhook { event, .. } => {
                incident_wire::endpoint_label("POST", incident_wire::WEBHOOK_PATH, Some(event))
            }
            Endpoint::InboxPage { .. } => route::INBOX_PAGE.label.into(),
            Endpoint::InboxCounts { .. } => route::INBOX_COUNTS.label.into(),
            Endpoint::AiDraft { .. } => route::AI_DRAFT.label.into(),
            Endpoint::Cron { path, .. } => format!("GET {path}"),
        }
    }

    /// Request `seq` of this stream; `unix_now` signs webhooks, `run_id` makes ids unique.
    pub fn request(&self, stream: usize, seq: u64, run_id: &str, unix_now: i64) -> Request {
        let h = mix(seq ^ ((stream as u64) << 48));
        match self {
            Endpoint::EmailWebhook {
                event,
                secret,
                workspaces,
                leads,
            } => {
                // Lead i lives in workspace ((i - 1) % workspaces) + 1, as the seeder puts it.
                let lead = 1 + h % u64::from((*leads).max(1));
                let workspace = (lead - 1) % u64::from((*workspaces).max(1)) + 1;
                let id = format!("{run_id}-s{stream}-{seq}");
                let body = serde_json::to_vec(&json!({
                    "event_id": id,
                    "type": event,
                    "workspace_id": workspace,
                    "lead_email": format!("lead{lead}@example.test"),
                    "occurred_at": "2026-01-23T17:55:00Z",
                    "subject": "Quick question about your calendar",
                }))
                .expect("a JSON object");
                let signature = sign_webhook(secret, unix_now, &body);
                Request {
                    method: reqwest::Method::POST,
                    path: incident_wire::WEBHOOK_PATH.into(),
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        (incident_wire::TIMESTAMP_HEADER.into(), unix_now.to_string()),
                        (incident_wire::SIGNATURE_HEADER.into(), signature),
                    ],
                    body: Some(body),
                    dedupe_id: (event == "EMAIL_SENT").then_some(id),
                }
            }
            Endpoint::InboxPage { sessions } => Request {
                method: reqwest::Method::GET,
                path: route::INBOX_PAGE.path.into(),
                headers: sessions.cookie(h, unix_now).into_iter().collect(),
                body: None,
                dedupe_id: None,
            },
            Endpoint::InboxCounts { sessions } => Request {
                method: reqwest::Method::POST,
                path: route::INBOX_COUNTS.path.into(),
                headers: json_headers(sessions.cookie(h, unix_now)),
                body: Some(b"{}".to_vec()),
                dedupe_id: None,
            },
            Endpoint::AiDraft { sessions } => {
                let scope = sessions.scope(h);
                let workspace = scope[(h >> 20) as usize % scope.len()];
                // A lead of that workspace: ids congruent to it modulo the workspace count.
                let lead = workspace + i64::from(sessions.workspaces) * ((h >> 40) % 10) as i64;
                Request {
                    method: reqwest::Method::POST,
                    path: route::AI_DRAFT.path.into(),
                    headers: json_headers(sessions.cookie(h, unix_now)),
                    body: Some(serde_json::to_vec(&json!({ "lead_id": lead })).expect("JSON")),
                    dedupe_id: None,
                }
            }
            Endpoint::Cron { path, secret } => Request {
                method: reqwest::Method::GET,
                path: path.clone(),
                headers: vec![("authorization".into(), format!("Bearer {secret}"))],
                body: None,
                dedupe_id: None,
            },
        }
    }
}

fn json_headers(cookie: Option<(String, String)>) -> Vec<(String, String)> {
    let mut h = vec![("content-type".to_owned(), "application/json".to_owned())];
    h.extend(cookie);
    h
}

impl Sessions {
    /// The workspaces of the user behind hash `h`: `scope_workspaces` distinct workspaces
    /// drawn for that user (the same every time), so users see different sets — as agency
    /// staff do, each with their own clients — and each set is its own counts scope.
    fn scope(&self, h: u64) -> Vec<i64> {
        let n = u64::from(self.workspaces.max(1));
        let want = u64::from(self.scope_workspaces.clamp(1, self.workspaces.max(1)));
        let user = h % u64::from(self.users.max(1));
        let mut scope = Vec::with_capacity(want as usize);
        // splitmix64 over (user, draw): a fixed, well-spread sequence per user.
        let mut state = user.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        while (scope.len() as u64) < want {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let ws = ((z ^ (z >> 31)) % n + 1) as i64;
            if !scope.contains(&ws) {
                scope.push(ws);
            }
        }
        scope.sort_unstable();
        scope
    }

    /// The cookie header for the request behind hash `h`, or none for a signed-out browser.
    fn cookie(&self, h: u64, unix_now: i64) -> Option<(String, String)> {
        if ((h >> 32) % 10_000) as f64 / 100.0 < self.signed_out_pct {
            return None;
        }
        let workspaces = self.scope(h);
        let user = format!("user{}", h % u64::from(self.users.max(1)));
        let session = Session {
            user: user.clone(),
            workspaces: workspaces.clone(),
            expires_at: unix_now + 3600,
        };
        Some((
            "cookie".into(),
            format!(
                "{ACCESS_COOKIE}={}; {REFRESH_COOKIE}={}",
                mint_access(&self.secret, &session),
                mint_refresh(&self.secret, &user, &workspaces)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(signed_out_pct: f64) -> Sessions {
        Sessions {
            secret: "s".into(),
            workspaces: 20,
            scope_workspaces: 5,
            users: 7,
            signed_out_pct,
        }
    }

    #[test]
    fn webhooks_are_signed_unique_and_hit_a_seeded_lead() {
        let e = Endpoint::EmailWebhook {
            event: "EMAIL_SENT".into(),
            secret: "k".into(),
            workspaces: 20,
            leads: 2000,
        };
        let a = e.request(0, 1, "run", 1_000);
        let b = e.request(0, 2, "run", 1_000);
        assert_ne!(a.dedupe_id, b.dedupe_id);
        let body: serde_json::Value = serde_json::from_slice(a.body.as_ref().unwrap()).unwrap();
        let lead: u64 = body["lead_email"].as_str().unwrap()[4..]
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body["workspace_id"].as_u64().unwrap(), (lead - 1) % 20 + 1);
        let sig = &a
            .headers
            .iter()
            .find(|(k, _)| k == incident_wire::SIGNATURE_HEADER)
            .unwrap()
            .1;
        assert!(incident_wire::verify_webhook(
            "k",
            Some("1000"),
            Some(sig),
            a.body.as_ref().unwrap(),
            1_000,
            5
        )
        .is_ok());
    }

    #[test]
    fn requests_are_repeatable_by_sequence_number() {
        let e = Endpoint::InboxCounts {
            sessions: sessions(0.0),
        };
        assert_eq!(
            e.request(1, 42, "r", 5).headers,
            e.request(1, 42, "r", 5).headers
        );
    }

    #[test]
    fn the_signed_out_share_carries_no_cookie() {
        let e = Endpoint::InboxPage {
            sessions: sessions(30.0),
        };
        let signed_out = (0..1000)
            .filter(|i| e.request(0, *i, "r", 5).headers.is_empty())
            .count();
        assert!((220..=380).contains(&signed_out), "{signed_out}");
    }

    #[test]
    fn scopes_are_distinct_existing_workspaces_one_set_per_user() {
        let s = sessions(0.0);
        for h in 0..50 {
            let scope = s.scope(h);
            assert_eq!(scope.len(), 5);
            assert!(scope.iter().all(|w| (1..=20).contains(w)));
            assert!(scope.windows(2).all(|p| p[0] < p[1]), "{scope:?}");
            assert_eq!(scope, s.scope(h + 7), "the same user, the same set");
        }
        // Hundreds of users over 200 workspaces: hundreds of different scopes.
        let many = Sessions {
            workspaces: 200,
            scope_workspaces: 10,
            users: 300,
            ..sessions(0.0)
        };
        let distinct: std::collections::BTreeSet<Vec<i64>> =
            (0..300).map(|h| many.scope(h)).collect();
        assert_eq!(distinct.len(), 300);
        // A scope as wide as the agency is every workspace.
        let all = Sessions {
            scope_workspaces: 20,
            ..sessions(0.0)
        };
        assert_eq!(all.scope(3), (1..=20).collect::<Vec<_>>());
    }
}
