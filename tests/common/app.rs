//! A running reference service for tests: its own Postgres cluster with the seeded smoke
//! dataset, fake providers on loopback, the service on port 0 in this runtime.

use std::time::Duration;

use fake_providers::{Fakes, Knobs, Provider};
use inbox_service::config::{Limits, ProviderUrls, Secrets};
use inbox_service::{AppState, Config, Switches};
use incident_lab::dataset::Template;
use incident_lab::model::Scale;
use incident_lab::postgres::PgServer;
use incident_wire::{
    mint_access, mint_refresh, sign_webhook, Session, ACCESS_COOKIE, REFRESH_COOKIE,
};
use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, PgConnection};

pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const CRON_SECRET: &str = "test-cron-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const SESSION_SECRET: &str = "test-session-secret";

pub struct TestApp {
    pub server: PgServer,
    pub db: String,
    pub fakes: Fakes,
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    /// A service with `switches` and default limits.
    pub async fn spawn(switches: Switches) -> Self {
        Self::spawn_with(switches, |_| {}).await
    }

    /// A service with `switches`, limits adjusted by `limits`.
    pub async fn spawn_with(switches: Switches, limits: impl FnOnce(&mut Limits)) -> Self {
        let server = super::local_server().await;
        let template = Template::prepare(&server, Scale::SMOKE, 53).await.unwrap();
        let (db, _) = template
            .clone_for_arm(&server, "test", switches.counts_cache_fallback)
            .await
            .unwrap();
        let fakes = Fakes::new(7);
        let fakes_addr = fakes.spawn().await.unwrap();
        let mut config = Config {
            bind: "127.0.0.1:0".parse().unwrap(),
            database_url: server.url(&db, true),
            switches,
            limits: Limits::default(),
            secrets: Secrets {
                webhook: WEBHOOK_SECRET.into(),
                cron: CRON_SECRET.into(),
                admin: ADMIN_TOKEN.into(),
                session: SESSION_SECRET.into(),
            },
            providers: ProviderUrls {
                ghl: format!("http://{fakes_addr}/ghl"),
                unipile: format!("http://{fakes_addr}/unipile"),
                ai: format!("http://{fakes_addr}/ai"),
            },
        };
        limits(&mut config.limits);
        let state = AppState::new(config).unwrap();
        state.check_database().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(inbox_service::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            server,
            db,
            fakes,
            base,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.pool.close().await;
        self.state.ops_pool.close().await;
        self.server.shutdown().await;
    }

    /// A direct connection to the service's database.
    pub async fn db(&self) -> PgConnection {
        self.server
            .connect_options(&self.db)
            .options([("statement_timeout", "0")])
            .connect()
            .await
            .unwrap()
    }

    /// A single number from SQL.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        let mut conn = self.db().await;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        n
    }

    /// Signs and posts raw `body` as the email provider does.
    pub async fn post_webhook_raw(&self, body: Vec<u8>) -> reqwest::Response {
        let ts = chrono_now();
        let sig = sign_webhook(WEBHOOK_SECRET, ts, &body);
        self.http
            .post(format!("{}/api/webhooks/email", self.base))
            .header("content-type", "application/json")
            .header(incident_wire::TIMESTAMP_HEADER, ts.to_string())
            .header(incident_wire::SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts every event at once (each on its own task); returns the statuses in order.
    pub async fn post_webhooks_concurrently(&self, events: Vec<Value>) -> Vec<u16> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, event) in events.into_iter().enumerate() {
            let post = self.signed_post(&event);
            tasks.spawn(async move { (i, post.send().await.unwrap().status().as_u16()) });
        }
        let mut statuses = tasks.join_all().await;
        statuses.sort();
        statuses.into_iter().map(|(_, s)| s).collect()
    }

    /// `event` posted to the webhook route, signed now as the email provider does (not sent).
    pub fn signed_post(&self, event: &Value) -> reqwest::RequestBuilder {
        let body = serde_json::to_vec(event).unwrap();
        let ts = chrono_now();
        let sig = sign_webhook(WEBHOOK_SECRET, ts, &body);
        self.http
            .post(format!("{}/api/webhooks/email", self.base))
            .header(incident_wire::TIMESTAMP_HEADER, ts.to_string())
            .header(incident_wire::SIGNATURE_HEADER, sig)
            .body(body)
    }

    pub async fn post_webhook(&self, event: &Value) -> reqwest::Response {
        self.post_webhook_raw(serde_json::to_vec(event).unwrap())
            .await
    }

    /// Runs a cron route with the right secret; returns its JSON report.
    pub async fn cron(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(CRON_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "cron {path}");
        r.json().await.unwrap()
    }

    /// Session cookies for a user who sees `workspaces` (valid access token).
    pub fn signed_in(workspaces: &[i64]) -> String {
        let session = Session {
            user: "u1".into(),
            workspaces: workspaces.to_vec(),
            expires_at: chrono_now() + 3600,
        };
        format!(
            "{ACCESS_COOKIE}={}; {REFRESH_COOKIE}={}",
            mint_access(SESSION_SECRET, &session),
            mint_refresh(SESSION_SECRET, "u1", workspaces)
        )
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    pub async fn post_action(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send().await.unwrap()
    }

    /// The value of one sample line of `/metrics` (`name{labels}`), or 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub fn set_knobs(&self, provider: Provider, knobs: Knobs) {
        self.fakes.set(provider, knobs);
    }
}

/// The fault: another session holds an ACCESS EXCLUSIVE lock on `messages` until rollback.
pub async fn lock_messages(conn: &mut PgConnection) -> sqlx::Transaction<'_, sqlx::Postgres> {
    let mut lock = conn.begin().await.unwrap();
    sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Provider knobs that answer every call after `ms` milliseconds.
pub fn slow(ms: u64) -> Knobs {
    Knobs {
        latency: fake_providers::Latency {
            base_ms: ms,
            ..Default::default()
        },
        ..Knobs::default()
    }
}

/// An EMAIL_SENT event for `workspace`.
pub fn email_sent(event_id: &str, workspace: i64, email: &str) -> Value {
    json!({
        "event_id": event_id,
        "type": "EMAIL_SENT",
        "workspace_id": workspace,
        "lead_email": email,
        "occurred_at": "2026-01-23T17:55:00Z",
        "subject": "Quick question"
    })
}

/// Header value as a number.
pub fn header_n(r: &reqwest::Response, name: &str) -> u32 {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits briefly for something eventually true (a poll with a deadline, not a sleep).
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 10s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
