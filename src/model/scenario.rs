//! The scenario as the harness runs it: traffic streams, phases, budgets, arms, the replay's
//! production figures, and the chaos timeline's flips and hypothesis. Built by
//! [`crate::scenario`] from a file; read by every room above.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_providers::{Knobs, Provider};
use inbox_service::config::Limits;
use inbox_service::{Flag, Switches};
use incident_wire::route;
use serde::{Deserialize, Deserializer};

use super::dataset::Scale;
use super::fault::TimedFault;
use super::fleet::{FleetSpec, PoolerSpec};
use super::observed::Observed;
use super::postgres::PgSettings;

/// The EMAIL_SENT webhook's label.
pub const WEBHOOK_LABEL: &str = route::EMAIL_WEBHOOK.label;
/// The inbox page's label.
pub const PAGE_LABEL: &str = route::INBOX_PAGE.label;
/// The sidebar counts action's label.
pub const COUNTS_LABEL: &str = route::INBOX_COUNTS.label;

/// Endpoints a budget can name.
pub const ENDPOINTS: [&str; 6] = {
    let mut labels = [""; 6];
    let mut i = 0;
    while i < route::ALL.len() {
        labels[i] = route::ALL[i].label;
        i += 1;
    }
    labels
};

/// An endpoint label checked against [`ENDPOINTS`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct EndpointName(pub String);

impl<'de> Deserialize<'de> for EndpointName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if ENDPOINTS.contains(&name.as_str()) {
            Ok(EndpointName(name))
        } else {
            Err(serde::de::Error::custom(format!(
                "unknown endpoint {name:?}; endpoints are {}",
                ENDPOINTS.join(", ")
            )))
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    #[serde(with = "incident_wire::duration")]
    pub from: Duration,
    #[serde(with = "incident_wire::duration")]
    pub to: Duration,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    Webhook,
    InboxPage,
    InboxCounts,
    AiDraft,
    CronBackgroundJobs,
    CronFollowups,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    #[serde(rename = "5xx")]
    ServerError,
    Timeout,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub on: Vec<RetryOn>,
    #[serde(with = "incident_wire::duration")]
    pub after: Duration,
    pub max: u8,
}

/// `redeliver = { share = 5.0, after = "2s" }`: that share (%) of acknowledged events is sent
/// again after that long, as at-least-once providers do.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverSpec {
    pub share: f64,
    #[serde(with = "incident_wire::duration")]
    pub after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: String,
    pub endpoint: EndpointKind,
    /// Webhooks: the event type.
    pub event: Option<String>,
    pub arrival: loadgen::Arrival,
    pub retry: Option<RetrySpec>,
    /// Webhooks: redeliveries of acknowledged events.
    pub redeliver: Option<RedeliverSpec>,
    /// Webhooks: share (%) of events sent twice at the same time.
    pub concurrent_duplicates: Option<f64>,
    /// Sessions: workspaces per user (an agency view when > 1).
    #[serde(default = "one")]
    pub scope_workspaces: u32,
    /// Sessions: distinct users.
    #[serde(default = "default_users")]
    pub users: u32,
    /// Sessions: percentage of signed-out browsers.
    #[serde(default)]
    pub signed_out_pct: f64,
    /// This stream's own concurrency (goose users). Default: enough for its peak rate, with
    /// the provider's retries, each in flight for the whole `client_timeout`
    /// (`loadgen::Stream::default_max_in_flight`). Always set after parsing.
    pub max_in_flight: Option<usize>,
}

impl StreamSpec {
    /// The stream's resolved concurrency.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or(1)
    }

    /// The at-least-once delivery this stream declares.
    pub fn delivery(&self) -> loadgen::AtLeastOnce {
        loadgen::AtLeastOnce {
            redeliver_pct: self.redeliver.map_or(0.0, |r| r.share),
            redeliver_after: self.redeliver.map_or(Duration::ZERO, |r| r.after),
            duplicate_pct: self.concurrent_duplicates.unwrap_or(0.0),
        }
    }

    /// The loadgen retry policy this stream declares.
    pub fn retry_policy(&self) -> Option<loadgen::RetryPolicy> {
        self.retry.as_ref().map(|r| loadgen::RetryPolicy {
            on_5xx: r.on.contains(&RetryOn::ServerError),
            on_timeout: r.on.contains(&RetryOn::Timeout),
            after: r.after,
            max: r.max,
        })
    }
}

fn one() -> u32 {
    1
}
fn default_users() -> u32 {
    20
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// p95 of latency from the intended send time, over the whole run.
    #[serde(
        default,
        deserialize_with = "incident_wire::duration::option::deserialize"
    )]
    #[serde(serialize_with = "as_ms")]
    pub p95: Option<Duration>,
    /// Most DB writes on one request.
    pub max_db_writes: Option<u32>,
    /// Most external calls on one request.
    pub max_external_calls: Option<u32>,
    /// Most statement timeouts (service-wide `db_timeout`) in the run.
    pub max_statement_timeouts: Option<u64>,
}

/// Reports give every time in milliseconds.
fn as_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
        None => s.serialize_none(),
    }
}

/// What an arm must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// The incident reproduces: webhook p95 over budget with 504s, `GET /` over budget in the
    /// incident phase, statement timeouts > 0.
    Incident,
    /// Every budget holds, no statement timeouts, every acknowledged event applied once.
    Fixed,
    /// Nothing required; reported for attribution.
    Observe,
}

/// What a flip checks before it is made (the seed's rollout: "validate queue writes, then
/// enable").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlipValidation {
    /// The service's database user can write the job queue (a probe row, rolled back) and
    /// the queue's dedupe key refuses a second copy.
    QueueWrites,
}

/// A flag flip on the load's timeline, made through the service's `/admin/flags`.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    pub at: Duration,
    pub flag: Flag,
    pub to: bool,
    pub validate: Vec<FlipValidation>,
}

/// The steady-state hypothesis, validated: budgets hold before the first fault or flip (else
/// the run stops, "not steady"); during, deviation is recorded; after, they hold again within
/// `recover_within`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hypothesis {
    /// The end of "before": the first fault or flip, or `steady_until`.
    pub disrupted_at: Duration,
    /// When the last one ends: the start of "after".
    pub settled_at: Duration,
    pub recover_within: Option<Duration>,
    pub max_failed_pct: f64,
    /// As written (kept so faults added on the command line can be measured the same way).
    pub steady_until: Option<Duration>,
}

/// `[reconnect]`: at `at` into the load, `share` % of the workspaces seeded disconnected
/// reconnect their LinkedIn account (the fake Unipile accepts their sends again).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    pub share: f64,
    #[serde(with = "incident_wire::duration")]
    pub at: Duration,
}

/// One arm, resolved: its name, switches and expectation.
#[derive(Debug, Clone)]
pub struct Arm {
    pub name: String,
    pub switches: Switches,
    pub expect: Expect,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub source: String,
    pub duration: Duration,
    pub seed: u64,
    pub poisson: bool,
    pub client_timeout: Duration,
    /// A send that starts later than this after its intended time is late (default 50 ms).
    pub late_after: Duration,
    /// Most late sends per stream, in %, for the load generator to count as keeping up
    /// (default 1 %); beyond it the arm is inconclusive.
    pub max_late_pct: f64,
    pub drain: Duration,
    pub incident_phase: String,
    pub scale: Scale,
    pub postgres: PgSettings,
    /// The service's limits: the service's defaults where the file sets none.
    pub service: Limits,
    /// Several service instances behind one front (`[service] instances` / `autoscale`, or a
    /// `[pooler]`); `None`: one service process, reached directly.
    pub fleet: Option<FleetSpec>,
    /// PgBouncer between the instances and Postgres.
    pub pooler: Option<PoolerSpec>,
    pub providers: BTreeMap<Provider, Knobs>,
    /// Disconnected LinkedIn accounts that reconnect mid-run (the health gate must re-admit
    /// them, and not skip their sends after that).
    pub reconnect: Option<Reconnect>,
    pub phases: Vec<Phase>,
    pub streams: Vec<StreamSpec>,
    pub budgets: BTreeMap<EndpointName, Budget>,
    pub arms: Vec<Arm>,
    /// What production saw, when the scenario replays a log export.
    pub observed: Option<Observed>,
    /// Faults on the load's timeline.
    pub faults: Vec<TimedFault>,
    /// Flag flips on the load's timeline.
    pub flips: Vec<Flip>,
    /// The steady-state hypothesis, when the scenario declares one.
    pub hypothesis: Option<Hypothesis>,
    /// `[abort]`: when the load stops early because it is hurting the target.
    pub abort: Option<Abort>,
    /// Not from the file (`matrix --access-log`): each arm's service writes an access log,
    /// `OUT/arm-NAME.access.jsonl`, one JSON line per request as a log drain holds.
    pub access_log: bool,
}

/// `[abort]`, as k6's `abortOnFail`: the load stops once every second of a stretch of `lasting`
/// failed — too many failed requests, or an endpoint's p95 over a multiple of its budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Abort {
    /// A second fails when this share (%) of its answers or more failed (5xx, timeouts,
    /// refused or broken connections).
    pub failed_pct: Option<f64>,
    /// A second fails when a budgeted endpoint's p95 in it is over this multiple of its budget.
    pub p95_over_budget: Option<f64>,
    /// How long it must fail, every second of it, for the load to stop.
    pub lasting: Duration,
}

impl Scenario {
    /// The service limits for this scenario (service defaults where unset).
    pub fn limits(&self) -> Limits {
        self.service.clone()
    }
}

/// The default matrix: every combination of the three rollout flags (unflagged fixes on), plus
/// `pre-phase-53` (everything legacy). Legacy and all-off must reproduce the incident; all-on
/// must hold every budget; the others are observed for attribution.
pub fn default_arms() -> Vec<Arm> {
    let mut arms = vec![Arm {
        name: "pre-phase-53".into(),
        switches: Switches::pre_phase_53(),
        expect: Expect::Incident,
    }];
    for bits in 0..8u8 {
        let switches = Switches {
            email_sent_async: bits & 1 != 0,
            counts_cache_fallback: bits & 2 != 0,
            unipile_health_gate: bits & 4 != 0,
            ..Switches::default()
        };
        let mut parts = Vec::new();
        for (bit, short) in [(1, "async"), (2, "counts"), (4, "gate")] {
            if bits & bit != 0 {
                parts.push(short);
            }
        }
        let (name, expect) = match bits {
            0 => ("all-off".to_owned(), Expect::Incident),
            7 => ("all-on".to_owned(), Expect::Fixed),
            _ => (parts.join("+"), Expect::Observe),
        };
        arms.push(Arm {
            name,
            switches,
            expect,
        });
    }
    arms
}
