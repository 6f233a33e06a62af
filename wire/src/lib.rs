//! # incident-wire
//!
//! The HTTP contract shared by the service (which checks) and the load generator (which
//! produces): the endpoints ([`route`]), webhook signatures, session and refresh tokens, the
//! webhook event payload, response headers and metric names, and the duration format every
//! crate reads ([`duration`]). Pure functions, no I/O.

pub mod duration;
pub mod flag;

pub use flag::Flag;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the webhook's unix timestamp (seconds).
pub const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
/// Header carrying hex HMAC-SHA256 over `"{timestamp}.{body}"`.
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";
/// Cookie with the access token.
pub const ACCESS_COOKIE: &str = "sb-access-token";
/// Cookie with the refresh token.
pub const REFRESH_COOKIE: &str = "sb-refresh-token";

/// Response header: rows the request wrote to Postgres (inserted, updated or deleted).
pub const DB_WRITES_HEADER: &str = "x-db-writes";
/// Response header: calls the request made to external providers (every attempt).
pub const EXTERNAL_CALLS_HEADER: &str = "x-external-calls";
/// Response header: the error categories the request met, comma-separated.
pub const ERROR_CATEGORY_HEADER: &str = "x-error-category";

/// Response header (W3C Server Timing): the service's own time for the request, from its
/// handler's start to its response — the figure its `/metrics` histogram records, here exact
/// and per request, so a report can cut it by intended send time. See [`server_timing`].
pub const SERVER_TIMING_HEADER: &str = "server-timing";

/// The [`SERVER_TIMING_HEADER`] value for `took`: `handler;dur=` milliseconds, to the µs.
pub fn server_timing(took: std::time::Duration) -> String {
    format!("handler;dur={:.3}", took.as_secs_f64() * 1000.0)
}

/// The `handler` duration in a [`SERVER_TIMING_HEADER`] value (`None` without one, or with
/// a duration that is not a non-negative number of milliseconds a `Duration` holds).
pub fn parse_server_timing(value: &str) -> Option<std::time::Duration> {
    value.split(',').find_map(|metric| {
        let mut parts = metric.split(';').map(str::trim);
        if parts.next()? != "handler" {
            return None;
        }
        let ms: f64 = parts.find_map(|p| p.strip_prefix("dur="))?.parse().ok()?;
        // Negative, NaN and too large for a Duration are all errors here, never a panic.
        std::time::Duration::try_from_secs_f64(ms / 1000.0).ok()
    })
}

/// The label of an endpoint in metrics, recordings and reports: `METHOD PATH`, and for
/// webhooks other than the high-volume `EMAIL_SENT` (which the budgets name) the event in
/// brackets, so each event gets its own row: `POST /api/webhooks/email [EMAIL_OPENED]`.
pub fn endpoint_label(method: &str, path: &str, event: Option<&str>) -> String {
    match event {
        Some(e) if e != "EMAIL_SENT" => format!("{method} {path} [{e}]"),
        _ => format!("{method} {path}"),
    }
}

/// Metric names the service exports and the harness reads (Prometheus text on `/metrics`).
pub mod metrics {
    /// Histogram by `route` and `status`: time from the handler's start to the response.
    pub const REQUEST_DURATION: &str = "http_request_duration_seconds";
    /// Histogram by `route`: time a request waited for pooled connections.
    pub const POOL_WAIT: &str = "db_pool_wait_seconds";
    /// Histogram by `route`: rows written per request.
    pub const DB_WRITES: &str = "db_writes_per_request";
    /// Histogram by `route`: external calls per request.
    pub const EXTERNAL_CALLS: &str = "external_calls_per_request";
    /// Gauges by `route`: the most rows written and external calls made by one request so
    /// far, exactly (the histograms give only a bucket): what a request of the route cut off
    /// before it could declare its own may have done.
    pub const DB_WRITES_MAX: &str = "db_writes_per_request_max";
    pub const EXTERNAL_CALLS_MAX: &str = "external_calls_per_request_max";
    /// Gauge by `route`: the most rows one statement wrote (a request runs one statement at
    /// a time, but a cron tick's jobs run side by side).
    pub const DB_STATEMENT_MAX: &str = "db_statement_rows_max";
    /// Counter by `route`: requests cut off at the function limit while working (not while
    /// waiting for a pooled connection): only these can have had a statement or a provider
    /// call in flight that their tally never counted.
    pub const CUT_OFF_WORKING: &str = "requests_cut_off_working_total";
    /// Counter by `category`.
    pub const ERRORS: &str = "errors_total";
    pub const POOL_MAX: &str = "db_pool_max";
    pub const POOL_SIZE: &str = "db_pool_size";
    pub const POOL_IDLE: &str = "db_pool_idle";
    pub const POOL_WAITERS: &str = "db_pool_waiters";
    /// Gauge by `status`.
    pub const QUEUE_DEPTH: &str = "job_queue_depth";
    /// Sidebar counts answers by `source`: `live`, `cache`, `fallback`.
    pub const COUNTS_ANSWERS: &str = "counts_answers_total";
    /// Slot ledger increments by `outcome`: `applied`, `skipped`, `acquire_failed`.
    pub const LEDGER: &str = "ledger_increments_total";
    /// Duration of the cron ticks that ran, by `runner` (histogram, seconds).
    pub const CRON_TICK: &str = "cron_tick_seconds";
    /// The longest cron tick so far, by `runner` (gauge, seconds).
    pub const CRON_TICK_MAX: &str = "cron_tick_max_seconds";
    /// Pooled connections cron ticks hold now (gauge).
    pub const CRON_CONNECTIONS: &str = "cron_connections";
    /// The most pooled connections cron ticks held at once (gauge).
    pub const CRON_CONNECTIONS_MAX: &str = "cron_connections_max";
    /// Statements that wrote queued `EMAIL_SENT` jobs, and the jobs they wrote (counters;
    /// rows ÷ statements is group commit's batch).
    pub const ENQUEUE_STATEMENTS: &str = "enqueue_statements_total";
    pub const ENQUEUE_ROWS: &str = "enqueue_rows_total";

    // The scale-out front (`[service] instances`/`autoscale`) adds these to the instances'
    // own series, which it concatenates: the harness sums counters and pool gauges over
    // instances and takes the largest of the database-wide gauges (queue depth).
    /// Service instances answering now (gauge).
    pub const FLEET_INSTANCES: &str = "fleet_instances";
    /// Requests the front is forwarding now (gauge).
    pub const FLEET_IN_FLIGHT: &str = "fleet_in_flight";
    /// Instance starts that failed (counter).
    pub const FLEET_FAILED_STARTS: &str = "fleet_failed_starts_total";
    /// Pooled connections in use by `instance` (gauge).
    pub const FLEET_INSTANCE_POOL_IN_USE: &str = "fleet_instance_pool_in_use";
    /// PgBouncer's `SHOW POOLS` for the run's database: clients waiting for a server
    /// connection, clients served, server connections linked to a client, idle ones (gauges).
    pub const POOLER_CL_WAITING: &str = "pooler_cl_waiting";
    pub const POOLER_CL_ACTIVE: &str = "pooler_cl_active";
    pub const POOLER_SV_ACTIVE: &str = "pooler_sv_active";
    pub const POOLER_SV_IDLE: &str = "pooler_sv_idle";
    /// How long the oldest waiting client has waited (gauge, seconds).
    pub const POOLER_MAXWAIT: &str = "pooler_maxwait_seconds";
    /// PgBouncer's `SHOW STATS`: time clients waited for a server, transactions (counters).
    pub const POOLER_WAIT: &str = "pooler_wait_seconds_total";
    pub const POOLER_XACTS: &str = "pooler_transactions_total";
}

/// Path of the email webhook.
pub const WEBHOOK_PATH: &str = route::EMAIL_WEBHOOK.path;

/// The service's own paths beside its endpoints: neither loaded nor budgeted.
pub mod ops {
    /// Prometheus text: the service's metrics (and, through the fleet's front, every
    /// instance's).
    pub const METRICS: &str = "/metrics";
    /// `ok` while the process serves.
    pub const HEALTHZ: &str = "/healthz";
    /// The switches: `GET` reads them, `PUT` a JSON object of names to booleans sets them
    /// (bearer `ADMIN_TOKEN`).
    pub const ADMIN_FLAGS: &str = "/admin/flags";
}

/// The providers' paths the service calls, under each provider's base URL (the fakes serve
/// each provider under a prefix of its own: `/ghl`, `/unipile`, `/ai`).
pub mod provider_path {
    /// GHL: upsert a contact.
    pub const GHL_CONTACT_UPSERT: &str = "/contacts/upsert";
    /// Unipile: send a LinkedIn message.
    pub const UNIPILE_SEND: &str = "/api/v1/messages";
    /// Unipile: whether a workspace's account is connected.
    pub const UNIPILE_ACCOUNT_STATUS: &str = "/api/v1/accounts/status";
    /// The AI API: a draft.
    pub const AI_DRAFT: &str = "/v1/draft";
    /// The AI API: the draft's verification.
    pub const AI_VERIFY: &str = "/v1/verify";
}

/// The service's endpoints: method, path and label, one definition each. The service routes
/// by them, the load generator requests them, scenarios and reports name them by label.
pub mod route {
    /// An endpoint: `label` is `METHOD PATH` (see [`super::endpoint_label`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Route {
        pub method: &'static str,
        pub path: &'static str,
        pub label: &'static str,
    }

    impl Route {
        const fn new(method: &'static str, path: &'static str, label: &'static str) -> Self {
            Self {
                method,
                path,
                label,
            }
        }
    }

    /// The email provider's webhook; its `EMAIL_SENT` events carry this label.
    pub const EMAIL_WEBHOOK: Route =
        Route::new("POST", "/api/webhooks/email", "POST /api/webhooks/email");
    /// The inbox page.
    pub const INBOX_PAGE: Route = Route::new("GET", "/", "GET /");
    /// The sidebar counts server action (`getInboxCounts()`).
    pub const INBOX_COUNTS: Route = Route::new(
        "POST",
        "/api/actions/inbox-counts",
        "POST /api/actions/inbox-counts",
    );
    /// The AI draft server action.
    pub const AI_DRAFT: Route = Route::new(
        "POST",
        "/api/actions/ai-draft",
        "POST /api/actions/ai-draft",
    );
    /// The background-jobs cron.
    pub const CRON_BACKGROUND_JOBS: Route = Route::new(
        "GET",
        "/api/cron/background-jobs",
        "GET /api/cron/background-jobs",
    );
    /// The follow-ups cron.
    pub const CRON_FOLLOWUPS: Route =
        Route::new("GET", "/api/cron/followups", "GET /api/cron/followups");

    /// Every endpoint a scenario can load or budget.
    pub const ALL: [Route; 6] = [
        EMAIL_WEBHOOK,
        INBOX_PAGE,
        INBOX_COUNTS,
        AI_DRAFT,
        CRON_BACKGROUND_JOBS,
        CRON_FOLLOWUPS,
    ];
}

/// Event types of `POST /api/webhooks/email`.
pub const EVENT_TYPES: [&str; 4] = [
    "EMAIL_SENT",
    "EMAIL_OPENED",
    "EMAIL_REPLIED",
    "EMAIL_BOUNCED",
];

/// An email provider event, as the provider sends it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmailEvent {
    /// Provider event id; the dedupe key.
    pub event_id: String,
    /// One of [`EVENT_TYPES`] (others are acknowledged and ignored).
    #[serde(rename = "type")]
    pub kind: String,
    pub workspace_id: i64,
    pub lead_email: String,
    /// RFC 3339.
    pub occurred_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

fn mac(secret: &str, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign_webhook(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    hex::encode(
        mac(secret, &[ts.as_bytes(), b".", body])
            .finalize()
            .into_bytes(),
    )
}

/// Why a webhook signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{TIMESTAMP_HEADER} is not a unix timestamp")]
    BadTimestamp,
    #[error("timestamp outside the {0}s tolerance (stale or replayed)")]
    Stale(u64),
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a webhook's signature and freshness, in constant time.
pub fn verify_webhook(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let ts_text = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let sig_text = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(ts) > tolerance_secs {
        return Err(SignatureError::Stale(tolerance_secs));
    }
    let given = hex::decode(sig_text.trim()).map_err(|_| SignatureError::Mismatch)?;
    let expected = mac(secret, &[ts_text.trim().as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    if expected.as_slice().ct_eq(&given).into() {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Who a session belongs to and which workspaces it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Sorted, non-empty.
    pub workspaces: Vec<i64>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Session {
    /// A stable, non-identifying key for the session's scope (safe for logs and caches).
    pub fn scope_key(&self) -> String {
        scope_key(&self.workspaces)
    }
}

/// `scope_` + 12 hex of SHA-256 over the sorted workspace ids.
pub fn scope_key(workspaces: &[i64]) -> String {
    let mut ids = workspaces.to_vec();
    ids.sort_unstable();
    let text = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    format!(
        "scope_{}",
        &hex::encode(Sha256::digest(text.as_bytes()))[..12]
    )
}

/// A one-way tag for a sensitive value (an email address, a client id) in logs and payloads.
pub fn redact(value: &str) -> String {
    format!("h_{}", &hex::encode(Sha256::digest(value.as_bytes()))[..12])
}

/// Mints an access token: `"{user}|{ws,ws}|{exp}.{hmac}"` (hex-encoded payload).
pub fn mint_access(secret: &str, session: &Session) -> String {
    let ws = session
        .workspaces
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    sign_token(
        secret,
        "access",
        &format!("{}|{ws}|{}", session.user, session.expires_at),
    )
}

/// Mints a refresh token for `user`.
pub fn mint_refresh(secret: &str, user: &str, workspaces: &[i64]) -> String {
    let ws = workspaces
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    sign_token(secret, "refresh", &format!("{user}|{ws}|0"))
}

fn sign_token(secret: &str, kind: &str, payload: &str) -> String {
    let sig = mac(secret, &[kind.as_bytes(), b":", payload.as_bytes()])
        .finalize()
        .into_bytes();
    format!("{}.{}", hex::encode(payload), hex::encode(sig))
}

/// Reads a token of `kind` ("access" or "refresh"); `None` if forged or malformed.
/// Expiry is the caller's business (`expires_at` is 0 for refresh tokens).
pub fn read_token(secret: &str, kind: &str, token: &str) -> Option<Session> {
    let (payload_hex, sig_hex) = token.split_once('.')?;
    let payload = String::from_utf8(hex::decode(payload_hex).ok()?).ok()?;
    let given = hex::decode(sig_hex).ok()?;
    let expected = mac(secret, &[kind.as_bytes(), b":", payload.as_bytes()])
        .finalize()
        .into_bytes();
    if !bool::from(expected.as_slice().ct_eq(&given)) {
        return None;
    }
    let mut parts = payload.split('|');
    let user = parts.next()?.to_owned();
    let mut workspaces: Vec<i64> = parts
        .next()?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let expires_at = parts.next()?.parse().ok()?;
    if workspaces.is_empty() || parts.next().is_some() {
        return None;
    }
    workspaces.sort_unstable();
    Some(Session {
        user,
        workspaces,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_time_reads_back_from_its_server_timing_header() {
        let took = std::time::Duration::from_micros(1_234_567);
        assert_eq!(server_timing(took), "handler;dur=1234.567");
        assert_eq!(parse_server_timing(&server_timing(took)), Some(took));
        // Among other metrics, with spaces, as a proxy may add them.
        assert_eq!(
            parse_server_timing("cdn;dur=3, handler; desc=\"x\"; dur=2.5"),
            Some(std::time::Duration::from_micros(2_500))
        );
        for bad in [
            "",
            "cdn;dur=3",
            "handler",
            "handler;dur=x",
            "handler;dur=-1",
            "handler;dur=NaN",
            "handler;dur=1e300",
        ] {
            assert_eq!(parse_server_timing(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_route_label_is_its_method_and_path() {
        for r in route::ALL {
            assert_eq!(r.label, endpoint_label(r.method, r.path, None));
        }
    }

    #[test]
    fn a_signed_webhook_verifies_and_a_tampered_one_does_not() {
        let body = br#"{"event_id":"e1"}"#;
        let sig = sign_webhook("k", 1_000, body);
        assert_eq!(
            verify_webhook("k", Some("1000"), Some(&sig), body, 1_010, 300),
            Ok(())
        );
        assert_eq!(
            verify_webhook("k", Some("1000"), Some(&sig), b"{}", 1_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_webhook("other", Some("1000"), Some(&sig), body, 1_010, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_missing_and_garbled_signatures_are_refused() {
        let sig = sign_webhook("k", 1_000, b"x");
        assert_eq!(
            verify_webhook("k", Some("1000"), Some(&sig), b"x", 2_000, 300),
            Err(SignatureError::Stale(300))
        );
        assert_eq!(
            verify_webhook("k", None, Some(&sig), b"x", 1_000, 300),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify_webhook("k", Some("1000"), None, b"x", 1_000, 300),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify_webhook("k", Some("soon"), Some(&sig), b"x", 1_000, 300),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_webhook("k", Some("1000"), Some("zz"), b"x", 1_000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let s = Session {
            user: "u7".into(),
            workspaces: vec![3, 1],
            expires_at: 99,
        };
        let t = mint_access("k", &s);
        let back = read_token("k", "access", &t).unwrap();
        assert_eq!(back.workspaces, vec![1, 3]);
        assert_eq!(back.expires_at, 99);
        assert!(
            read_token("k", "refresh", &t).is_none(),
            "an access token is not a refresh token"
        );
        assert!(read_token("x", "access", &t).is_none());
        assert!(read_token("k", "access", "nonsense").is_none());
    }

    #[test]
    fn scope_keys_ignore_order_and_reveal_no_ids() {
        assert_eq!(scope_key(&[2, 1]), scope_key(&[1, 2]));
        assert_ne!(scope_key(&[1]), scope_key(&[2]));
        assert!(!scope_key(&[12345]).contains("12345"));
        assert!(!redact("a@b.test").contains('@'));
    }
}
