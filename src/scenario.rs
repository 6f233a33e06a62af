//! Scenario files (`scenarios/*.toml`): traffic, phases, dataset, Postgres and service limits,
//! provider behaviour, budgets, and the arms with what each must show. Parsed once into typed
//! values; every error names the file, line, field and value, and unknown keys or flag names
//! are errors — nothing is silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use fake_providers::{Knobs, Provider};
use inbox_service::config::Limits;
use inbox_service::Switches;
use incident_wire::route;
use loadgen::Arrival;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::dataset::Scale;
use crate::postgres::PgSettings;

/// The switches an arm may set by name: the rollout flags and `LOG_SLOW_PATHS`.
pub const FLAGS: [&str; 4] = Switches::FLAGS;

/// A flag name checked against [`FLAGS`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlagName(pub String);

impl<'de> Deserialize<'de> for FlagName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if FLAGS.contains(&name.as_str()) {
            Ok(FlagName(name))
        } else {
            Err(serde::de::Error::custom(format!(
                "unknown flag {name:?}; flags are {}",
                FLAGS.join(", ")
            )))
        }
    }
}

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
pub struct DatasetSpec {
    /// `smoke` or `default`; the fields below override it.
    #[serde(default = "default_scale")]
    pub scale: String,
    pub workspaces: Option<u32>,
    pub leads: Option<u32>,
    pub messages: Option<u64>,
    pub disconnected_pct: Option<u8>,
    pub followups_pct: Option<u8>,
}

fn default_scale() -> String {
    "default".into()
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    pub name: String,
    #[serde(default)]
    pub flags: BTreeMap<FlagName, bool>,
    /// Also switch the unflagged fixes to their legacy behaviour (the pre-Phase-53 world).
    #[serde(default)]
    pub legacy: bool,
    pub expect: Expect,
}

/// The keys of `[service]` that are the platform's, not the service's: how many instances run.
const FLEET_KEYS: [&str; 2] = ["instances", "autoscale"];

/// Takes `[service]`'s `instances` and `autoscale` lines out of `text` (blanked, so every other
/// line and column stays where it was, and the service's own limits keep refusing unknown
/// keys): `(text without them, [(key, value as written, byte offset of its line)])`.
fn take_fleet_keys(text: &str) -> (String, Vec<(&'static str, String, usize)>) {
    let mut out = String::with_capacity(text.len());
    let mut taken = Vec::new();
    let mut in_service = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let header = trimmed.split('#').next().unwrap_or_default().trim_end();
            in_service = header == "[service]";
        }
        let key = trimmed.split_once('=').map(|(k, v)| (k.trim(), v.trim()));
        match key {
            Some((k, v)) if in_service => match FLEET_KEYS.iter().find(|f| **f == k) {
                Some(f) => {
                    taken.push((*f, v.to_owned(), offset));
                    out.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
                }
                None => out.push_str(line),
            },
            _ => out.push_str(line),
        }
        offset += line.len();
    }
    (out, taken)
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(with = "incident_wire::duration")]
    duration: Duration,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default = "default_true")]
    poisson: bool,
    /// Moved to each stream; refused here with a message saying so.
    max_in_flight: Option<Spanned<toml::Value>>,
    #[serde(default, with = "incident_wire::duration::option")]
    client_timeout: Option<Duration>,
    /// A send that starts later than this after its intended time is late.
    #[serde(default, with = "incident_wire::duration::option")]
    late_after: Option<Duration>,
    /// Most late sends a stream may have, in % of its sends, before the arm is inconclusive.
    max_late_pct: Option<f64>,
    /// How long to let the queue drain after the load.
    #[serde(default, with = "incident_wire::duration::option")]
    drain: Option<Duration>,
    #[serde(default = "default_incident_phase")]
    incident_phase: String,
    dataset: DatasetSpec,
    postgres: Spanned<PgSettings>,
    #[serde(default)]
    service: Limits,
    pooler: Option<Spanned<crate::fleet::PoolerSpec>>,
    #[serde(default)]
    providers: BTreeMap<Provider, Knobs>,
    reconnect: Option<Spanned<Reconnect>>,
    phases: Vec<Spanned<Phase>>,
    streams: Vec<Spanned<StreamSpec>>,
    budgets: BTreeMap<EndpointName, Budget>,
    arms: Option<Vec<Spanned<ArmSpec>>>,
    /// A replay's production figures (`scenario from-logs`).
    #[serde(default)]
    observed: Option<crate::logs::Observed>,
    /// Faults on the load's timeline.
    #[serde(default)]
    faults: Vec<Spanned<FaultSpec>>,
    /// Flag flips on the load's timeline.
    #[serde(default)]
    flips: Vec<Spanned<FlipSpec>>,
    hypothesis: Option<Spanned<HypothesisSpec>>,
}

/// What a `[[faults]]` entry does: to the database link (through the fault proxy between the
/// service and Postgres), to the Postgres process, to a fake provider, or to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `latency` (± `jitter`) added to each response chunk.
    Latency,
    /// At most `bandwidth` bytes per second each way.
    Bandwidth,
    /// Every byte dropped both ways; connections stay open.
    Hang,
    /// New connections reset on arrival.
    Refuse,
    /// `delay` before each new connection reaches Postgres.
    SlowConnect,
    /// Every open connection reset, once (no `for`).
    Reset,
    /// Every Postgres process stopped (SIGSTOP, or `docker pause`), then resumed.
    Pause,
    /// Postgres crashes and restarts (a backend killed: every connection ends, recovery runs).
    Restart,
    /// A session holds a lock on `table` (`mode`, default ACCESS EXCLUSIVE).
    Lock,
    /// `sessions` heavy queries keep Postgres's CPUs busy.
    Cpu,
    /// The service is killed (SIGKILL) and started again after `for` (default at once).
    Kill,
    /// A fake provider's behaviour replaced by `knobs` (over the scenario's own).
    Provider,
}

/// Where a fault acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// The database link, through the fault proxy.
    Link,
    /// The Postgres server's processes or sessions.
    Postgres,
    /// A fake provider.
    Provider,
    /// The service process.
    Service,
}

impl FaultKind {
    /// Every kind: its parameters and what it does, as `chaos list` prints them.
    pub const ALL: [(FaultKind, &'static str, &'static str); 12] = [
        (
            FaultKind::Latency,
            "latency (duration), jitter (duration, optional)",
            "added to each response chunk on open and new connections, ± jitter",
        ),
        (FaultKind::Bandwidth, "bandwidth (bytes per second)", "paces both directions"),
        (
            FaultKind::Hang,
            "-",
            "a blackhole: every byte dropped both ways, connections kept open (their queries never answer)",
        ),
        (FaultKind::Refuse, "-", "new connections are reset on arrival; open ones carry on"),
        (
            FaultKind::SlowConnect,
            "delay (duration)",
            "each new connection waits before it reaches Postgres",
        ),
        (
            FaultKind::Reset,
            "- (instant: no `for`)",
            "every open connection is reset (RST to both sides), once",
        ),
        (
            FaultKind::Pause,
            "-",
            "every Postgres process stopped (SIGSTOP; `docker pause` for a container), resumed at the end",
        ),
        (
            FaultKind::Restart,
            "- (instant: no `for`)",
            "Postgres crashes and restarts: a backend is killed, every connection ends, crash recovery runs (local backend)",
        ),
        (
            FaultKind::Lock,
            "table (name), mode (lock mode, default ACCESS EXCLUSIVE)",
            "a harness session holds the lock for the fault's length, then rolls back",
        ),
        (
            FaultKind::Cpu,
            "sessions (count, default 2)",
            "that many sessions run a CPU-bound query for the fault's length",
        ),
        (
            FaultKind::Kill,
            "`for` optional: the downtime before the restart (default 0)",
            "the service gets SIGKILL mid-request, then starts again on the same port with the flags it had",
        ),
        (
            FaultKind::Provider,
            "provider (ghl | unipile | ai), knobs (latency, errors, truncation_pct)",
            "the provider's knobs replaced for the fault's length (GHL 5xx/429 storms, a Unipile disconnect flood, a slow or truncating AI)",
        ),
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Hang => "hang",
            FaultKind::Refuse => "refuse",
            FaultKind::SlowConnect => "slow_connect",
            FaultKind::Reset => "reset",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Lock => "lock",
            FaultKind::Cpu => "cpu",
            FaultKind::Kill => "kill",
            FaultKind::Provider => "provider",
        }
    }

    /// Where it acts.
    pub fn target(self) -> FaultTarget {
        match self {
            FaultKind::Latency
            | FaultKind::Bandwidth
            | FaultKind::Hang
            | FaultKind::Refuse
            | FaultKind::SlowConnect
            | FaultKind::Reset => FaultTarget::Link,
            FaultKind::Pause | FaultKind::Restart | FaultKind::Lock | FaultKind::Cpu => {
                FaultTarget::Postgres
            }
            FaultKind::Kill => FaultTarget::Service,
            FaultKind::Provider => FaultTarget::Provider,
        }
    }

    /// An instant fault: no `for`.
    pub fn instant(self) -> bool {
        matches!(self, FaultKind::Reset | FaultKind::Restart)
    }

    /// It cuts connections or the service mid-commit, so an acknowledgment can be lost (the
    /// declared-vs-measured rows check cannot be made).
    pub fn cuts(self) -> bool {
        matches!(
            self,
            FaultKind::Reset | FaultKind::Hang | FaultKind::Restart | FaultKind::Kill
        )
    }
}

/// `[[faults]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    #[serde(with = "incident_wire::duration")]
    at: Duration,
    #[serde(rename = "for", default, with = "incident_wire::duration::option")]
    lasts: Option<Duration>,
    kind: FaultKind,
    #[serde(default, with = "incident_wire::duration::option")]
    latency: Option<Duration>,
    #[serde(default, with = "incident_wire::duration::option")]
    jitter: Option<Duration>,
    bandwidth: Option<u64>,
    #[serde(default, with = "incident_wire::duration::option")]
    delay: Option<Duration>,
    table: Option<String>,
    mode: Option<String>,
    sessions: Option<u32>,
    provider: Option<Provider>,
    knobs: Option<toml::Value>,
}

/// A validated fault: from `at` to `until` on the load's clock (`until == at` for an instant
/// one).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub at: Duration,
    pub until: Duration,
    /// What the proxy does while it lasts (link faults).
    pub faults: crate::chaos::Faults,
    /// `lock`: the table and the lock mode.
    pub lock: Option<(String, String)>,
    /// `cpu`: how many sessions.
    pub sessions: u32,
    /// `provider`: which, and its knobs while the fault lasts.
    pub provider: Option<(Provider, Knobs)>,
}

/// Postgres's table lock modes, as `LOCK TABLE … IN mode MODE` takes them.
pub const LOCK_MODES: [&str; 8] = [
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
];

/// `[[flips]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlipSpec {
    #[serde(with = "incident_wire::duration")]
    at: Duration,
    flag: FlagName,
    to: bool,
    /// Checked just before the flip; the flip is not made when it fails.
    #[serde(default)]
    validate: Vec<FlipValidation>,
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
    pub flag: String,
    pub to: bool,
    pub validate: Vec<FlipValidation>,
}

/// `[hypothesis]`: the steady state a chaos run must start from and come back to.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct HypothesisSpec {
    /// Where the stretch that must be steady ends (default: the first fault or flip) — for a
    /// flip made into a burst on purpose, the burst's start.
    #[serde(default, with = "incident_wire::duration::option")]
    steady_until: Option<Duration>,
    /// After the last fault ends (or the last flip), every budget must hold again within this.
    #[serde(default, with = "incident_wire::duration::option")]
    recover_within: Option<Duration>,
    /// Most failed requests (5xx, timeouts, broken connections) per endpoint, in %, for a
    /// stretch to count as steady (default 1 %).
    max_failed_pct: Option<f64>,
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

fn default_seed() -> u64 {
    53
}
fn default_true() -> bool {
    true
}
fn default_incident_phase() -> String {
    "burst".into()
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
    pub fleet: Option<crate::fleet::FleetSpec>,
    /// PgBouncer between the instances and Postgres.
    pub pooler: Option<crate::fleet::PoolerSpec>,
    pub providers: BTreeMap<Provider, Knobs>,
    /// Disconnected LinkedIn accounts that reconnect mid-run (the health gate must re-admit
    /// them, and not skip their sends after that).
    pub reconnect: Option<Reconnect>,
    pub phases: Vec<Phase>,
    pub streams: Vec<StreamSpec>,
    pub budgets: BTreeMap<EndpointName, Budget>,
    pub arms: Vec<Arm>,
    /// What production saw, when the scenario replays a log export.
    pub observed: Option<crate::logs::Observed>,
    /// Faults on the load's timeline.
    pub faults: Vec<Fault>,
    /// Flag flips on the load's timeline.
    pub flips: Vec<Flip>,
    /// The steady-state hypothesis, when the scenario declares one.
    pub hypothesis: Option<Hypothesis>,
}

/// A scenario error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// The offending line, as written.
    pub source_line: Option<String>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message)?,
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message)?,
            _ => write!(f, "{}: {}", self.file, self.message)?,
        }
        match &self.source_line {
            Some(text) => write!(f, "\n  | {text}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ScenarioError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
            source_line: None,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map(|s| line_col(text, s.start)).unzip();
            ScenarioError {
                file: file.to_owned(),
                line,
                column,
                message,
                source_line: line
                    .and_then(|l| text.lines().nth(l - 1))
                    .map(|t| t.trim().to_owned()),
            }
        };
        let (without_fleet, fleet_keys) = take_fleet_keys(text);
        let raw: ScenarioFile =
            toml::from_str(&without_fleet).map_err(|e| at(e.span(), e.message().to_owned()))?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Value<T> {
            v: T,
        }
        let (mut instances, mut autoscale, mut service_span) = (None, None, None);
        for (key, value, offset) in &fleet_keys {
            let span = Some(*offset..*offset + 1);
            let bad = |e: toml::de::Error| {
                at(
                    span.clone(),
                    format!("[service] field `{key}`: {}", e.message().trim_end()),
                )
            };
            match *key {
                "instances" => {
                    instances = Some(
                        toml::from_str::<Value<u32>>(&format!("v = {value}"))
                            .map_err(bad)?
                            .v,
                    )
                }
                _ => {
                    autoscale = Some(
                        toml::from_str::<Value<crate::fleet::Autoscale>>(&format!("v = {value}"))
                            .map_err(bad)?
                            .v,
                    )
                }
            }
            service_span = service_span.or(span);
        }
        let duration = raw.duration;
        if duration.is_zero() {
            return Err(at(None, "field `duration` must be more than 0s".into()));
        }
        if let Some(old) = &raw.max_in_flight {
            return Err(at(
                Some(old.span()),
                "field `max_in_flight` is per stream now: set it in each [[streams]] that needs more than its default (peak rate × client_timeout)".into(),
            ));
        }
        let client_timeout = raw.client_timeout.unwrap_or(Duration::from_secs(90));
        let max_late_pct = raw.max_late_pct.unwrap_or(1.0);
        if !(0.0..=100.0).contains(&max_late_pct) {
            return Err(at(
                None,
                format!("field `max_late_pct` = {max_late_pct} must be 0–100"),
            ));
        }

        let mut phases = Vec::new();
        for p in &raw.phases {
            let ph = p.get_ref();
            if ph.from >= ph.to || ph.to > duration {
                return Err(at(
                    Some(p.span()),
                    format!(
                        "phase {:?}: `from` must be before `to`, and `to` within the duration",
                        ph.name
                    ),
                ));
            }
            phases.push(ph.clone());
        }
        if !phases.iter().any(|p| p.name == raw.incident_phase) {
            return Err(at(
                None,
                format!(
                    "field `incident_phase`: no phase named {:?}",
                    raw.incident_phase
                ),
            ));
        }

        let reconnect = match &raw.reconnect {
            None => None,
            Some(r) => {
                let v = *r.get_ref();
                if !(v.share > 0.0 && v.share <= 100.0) {
                    return Err(at(
                        Some(r.span()),
                        format!(
                            "[reconnect] field `share` = {} must be over 0 and at most 100",
                            v.share
                        ),
                    ));
                }
                if v.at >= duration {
                    return Err(at(
                        Some(r.span()),
                        format!(
                            "[reconnect] field `at` = {} must fall within the run ({})",
                            incident_wire::duration::format(v.at),
                            incident_wire::duration::format(duration)
                        ),
                    ));
                }
                Some(v)
            }
        };

        let mut faults = Vec::new();
        for f in &raw.faults {
            faults.push(
                fault(f.get_ref(), duration, &raw.providers).map_err(|m| at(Some(f.span()), m))?,
            );
        }
        if let Some(f) = raw
            .faults
            .iter()
            .find(|f| f.get_ref().kind == FaultKind::Restart)
        {
            if !raw.postgres.get_ref().durable {
                return Err(at(
                    Some(f.span()),
                    "[[faults]] kind \"restart\" needs `durable = true` in [postgres]: without fsync and synchronous_commit a crash loses commits already acknowledged, which the exactly-once check would blame on the service".into(),
                ));
            }
        }
        let mut flips = Vec::new();
        for f in &raw.flips {
            let v = f.get_ref();
            if v.at >= duration {
                return Err(at(
                    Some(f.span()),
                    format!(
                        "[[flips]] field `at` = {} must fall within the run ({})",
                        incident_wire::duration::format(v.at),
                        incident_wire::duration::format(duration)
                    ),
                ));
            }
            flips.push(Flip {
                at: v.at,
                flag: v.flag.0.clone(),
                to: v.to,
                validate: v.validate.clone(),
            });
        }
        flips.sort_by_key(|f| f.at);
        let hypothesis = match &raw.hypothesis {
            None => None,
            Some(h) => {
                let v = h.get_ref();
                Some(
                    hypothesis(v, &faults, &flips, duration)
                        .map_err(|m| at(Some(h.span()), format!("[hypothesis] {m}")))?,
                )
            }
        };

        if raw.streams.is_empty() {
            return Err(at(None, "at least one [[streams]] is needed".into()));
        }
        let mut streams = Vec::new();
        for s in &raw.streams {
            let st = s.get_ref();
            let bad = |m: String| at(Some(s.span()), format!("stream {:?}: {m}", st.name));
            match (&st.endpoint, &st.event) {
                (EndpointKind::Webhook, Some(e))
                    if incident_wire::EVENT_TYPES.contains(&e.as_str()) => {}
                (EndpointKind::Webhook, Some(e)) => {
                    return Err(bad(format!(
                        "field `event` = {e:?} is not one of {}",
                        incident_wire::EVENT_TYPES.join(", ")
                    )))
                }
                (EndpointKind::Webhook, None) => {
                    return Err(bad("field `event` is required for webhooks".into()))
                }
                (_, Some(_)) => return Err(bad("field `event` is for webhooks only".into())),
                _ => {}
            }
            let rates_ok = match &st.arrival {
                Arrival::Constant { rate } | Arrival::Burst { rate, .. } => *rate >= 0.0,
                Arrival::Ramp {
                    from_rate, to_rate, ..
                } => *from_rate >= 0.0 && *to_rate >= 0.0,
                Arrival::Schedule { points } => points.iter().all(|p| p.1 >= 0.0),
                Arrival::Counts { every, .. } => {
                    if every.is_zero() {
                        return Err(bad("arrival `every` must be longer than 0".into()));
                    }
                    true
                }
            };
            if !rates_ok {
                return Err(bad("arrival rates must be 0 or more".into()));
            }
            if !(0.0..=100.0).contains(&st.signed_out_pct)
                || st.users == 0
                || st.scope_workspaces == 0
            {
                return Err(bad(
                    "`signed_out_pct` must be 0–100, `users` and `scope_workspaces` at least 1"
                        .into(),
                ));
            }
            let shares = [
                st.redeliver.map(|r| ("redeliver.share", r.share)),
                st.concurrent_duplicates
                    .map(|d| ("concurrent_duplicates", d)),
            ];
            for (field, share) in shares.into_iter().flatten() {
                if st.endpoint != EndpointKind::Webhook {
                    return Err(bad(format!("field `{field}` is for webhooks only")));
                }
                if !(0.0..=100.0).contains(&share) {
                    return Err(bad(format!("field `{field}` = {share} must be 0–100 (%)")));
                }
            }
            if st.max_in_flight == Some(0) {
                return Err(bad("field `max_in_flight` must be at least 1".into()));
            }
            let mut st = st.clone();
            let retry = st.retry_policy();
            st.max_in_flight = Some(st.max_in_flight.unwrap_or_else(|| {
                loadgen::Stream::default_max_in_flight(
                    &st.arrival,
                    retry.as_ref(),
                    &st.delivery(),
                    duration,
                    client_timeout,
                )
            }));
            streams.push(st);
        }

        let d = &raw.dataset;
        let preset: Scale = d
            .scale
            .parse()
            .map_err(|e: String| at(None, format!("field `dataset.scale`: {e}")))?;
        let scale = Scale {
            workspaces: d.workspaces.unwrap_or(preset.workspaces),
            leads: d.leads.unwrap_or(preset.leads),
            messages: d.messages.unwrap_or(preset.messages),
            disconnected_pct: d.disconnected_pct.unwrap_or(preset.disconnected_pct),
            followups_pct: d.followups_pct.unwrap_or(preset.followups_pct),
        };
        scale
            .validate()
            .map_err(|e| at(None, format!("[dataset]: {e}")))?;

        raw.service
            .validate()
            .map_err(|e| at(None, format!("[service]: {e}")))?;
        let fleet = crate::fleet::FleetSpec::from_file(instances, autoscale)
            .map_err(|e| at(service_span.clone(), format!("[service] {e}")))?;
        let pooler = match &raw.pooler {
            None => None,
            Some(p) => {
                p.get_ref()
                    .validate()
                    .map_err(|e| at(Some(p.span()), format!("[pooler] {e}")))?;
                Some(p.get_ref().clone())
            }
        };
        let fleet = fleet.or(pooler.as_ref().map(|_| crate::fleet::FleetSpec::single()));
        if let Some(f) = &fleet {
            let span = service_span.or(raw.pooler.as_ref().map(|p| p.span()));
            crate::fleet::check_connections(
                f,
                raw.service.pool_max,
                pooler.as_ref(),
                raw.postgres.get_ref().max_connections,
            )
            .map_err(|e| at(span.clone(), format!("[service] {e}")))?;
            let unsupported = raw.faults.iter().find(|f| {
                matches!(
                    f.get_ref().kind.target(),
                    FaultTarget::Link | FaultTarget::Service
                )
            });
            if let Some(fault) = unsupported {
                return Err(at(
                    Some(fault.span()),
                    "[[faults]] on the database link or the service process are not supported with several instances or a pooler yet: run them on one instance".into(),
                ));
            }
            if let Some(flip) = raw.flips.first() {
                return Err(at(
                    Some(flip.span()),
                    "[[flips]] are not supported with several instances or a pooler yet (a flip would have to reach every instance)".into(),
                ));
            }
        }

        let postgres = raw.postgres.get_ref().clone();
        let bad_pg = |m: String| Err(at(Some(raw.postgres.span()), format!("[postgres] {m}")));
        if let Some(cpus) = postgres.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return bad_pg(format!(
                    "field `cpus` = {cpus} must be a number of cores over 0"
                ));
            }
        }
        if let Some(memory) = postgres.memory {
            if memory.bytes() < 64 << 20 || memory.bytes() < 2 * postgres.shared_buffers.bytes() {
                return bad_pg(format!(
                    "field `memory` = {} MiB must be at least 64 MiB and twice shared_buffers",
                    memory.bytes() >> 20
                ));
            }
        }

        let arms = match &raw.arms {
            Some(list) => {
                let mut names = BTreeSet::new();
                let mut arms = Vec::new();
                for a in list {
                    let spec = a.get_ref();
                    if !names.insert(spec.name.clone()) {
                        return Err(at(
                            Some(a.span()),
                            format!("arm {:?} is declared twice", spec.name),
                        ));
                    }
                    let mut switches = if spec.legacy {
                        Switches::pre_phase_53()
                    } else {
                        Switches::default()
                    };
                    for (flag, on) in &spec.flags {
                        switches
                            .set(&flag.0, *on)
                            .expect("flag names are validated");
                    }
                    arms.push(Arm {
                        name: spec.name.clone(),
                        switches,
                        expect: spec.expect,
                    });
                }
                if arms.is_empty() {
                    return Err(at(
                        None,
                        "`arms` is empty: leave it out for the default matrix".into(),
                    ));
                }
                arms
            }
            None => default_arms(),
        };

        Ok(Self {
            name: raw.name,
            description: raw.description,
            source: file.to_owned(),
            duration,
            seed: raw.seed,
            poisson: raw.poisson,
            client_timeout,
            late_after: raw.late_after.unwrap_or(Duration::from_millis(50)),
            max_late_pct,
            drain: raw.drain.unwrap_or(Duration::from_secs(30)),
            incident_phase: raw.incident_phase,
            scale,
            postgres,
            service: raw.service,
            fleet,
            pooler,
            providers: raw.providers,
            reconnect,
            phases,
            streams,
            budgets: raw.budgets,
            arms,
            observed: raw.observed,
            faults,
            flips,
            hypothesis,
        })
    }

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

/// The hypothesis over these faults and flips: "before" ends at the first, "after" starts
/// when the last ends.
fn hypothesis(
    spec: &HypothesisSpec,
    faults: &[Fault],
    flips: &[Flip],
    duration: Duration,
) -> Result<Hypothesis, String> {
    let (recover_within, max_failed_pct) = (spec.recover_within, spec.max_failed_pct);
    let fmt = incident_wire::duration::format;
    let starts = faults
        .iter()
        .map(|f| f.at)
        .chain(flips.iter().map(|f| f.at));
    let ends = faults
        .iter()
        .map(|f| f.until)
        .chain(flips.iter().map(|f| f.at));
    let (Some(disrupted_at), Some(settled_at)) = (starts.min(), ends.max()) else {
        return Err(
            "needs a [[faults]] or [[flips]] entry: there is nothing to be steady before and after"
                .into(),
        );
    };
    let disrupted_at = match spec.steady_until {
        Some(u) if u > disrupted_at => {
            return Err(format!(
                "field `steady_until` = {} comes after the first fault or flip ({})",
                fmt(u),
                fmt(disrupted_at)
            ))
        }
        Some(u) => u,
        None => disrupted_at,
    };
    if disrupted_at < Duration::from_secs(2) {
        return Err(format!(
            "the steady stretch ends at {}: at least 2s of load are needed to judge the steady state",
            fmt(disrupted_at)
        ));
    }
    let max_failed_pct = max_failed_pct.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&max_failed_pct) {
        return Err(format!(
            "field `max_failed_pct` = {max_failed_pct} must be a percentage (0 to 100)"
        ));
    }
    if let Some(r) = recover_within {
        if settled_at + r > duration {
            return Err(format!(
                "field `recover_within` = {}: the last fault or flip ends at {}, so recovery would be judged past the run's end ({})",
                fmt(r),
                fmt(settled_at),
                fmt(duration)
            ));
        }
    }
    Ok(Hypothesis {
        disrupted_at,
        settled_at,
        recover_within,
        max_failed_pct,
        steady_until: spec.steady_until,
    })
}

/// `k=v,k=v` from the command line as TOML lines: numbers and booleans as they are, other
/// values quoted; dotted keys (`knobs.errors.server_error_pct=50`) as TOML dotted keys.
fn cli_toml(spec: &str) -> Result<String, String> {
    let mut lines = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        let (k, v) = (k.trim(), v.trim());
        let bare = v.parse::<f64>().is_ok() || v == "true" || v == "false";
        let value = if bare {
            v.to_owned()
        } else {
            toml::Value::String(v.to_owned()).to_string()
        };
        lines.push(format!("{k} = {value}"));
    }
    Ok(lines.join("\n"))
}

impl Scenario {
    /// Adds faults (`--fault at=5s,for=8s,kind=latency,latency=40ms`) and flips (`--flip
    /// at=10s,flag=INBOXXIA_EMAIL_SENT_ASYNC,to=true`) given on the command line, checked as
    /// the file's are; the hypothesis (if any) is measured around all of them.
    pub fn add_timeline(&mut self, faults: &[String], flips: &[String]) -> Result<(), String> {
        for spec in faults {
            let f: FaultSpec = cli_toml(spec)
                .and_then(|t| toml::from_str(&t).map_err(|e| e.message().to_owned()))
                .map_err(|m| format!("--fault {spec:?}: {m}"))?;
            self.faults.push(
                fault(&f, self.duration, &self.providers)
                    .map_err(|m| format!("--fault {spec:?}: {m}"))?,
            );
        }
        for spec in flips {
            let f: FlipSpec = cli_toml(spec)
                .and_then(|t| toml::from_str(&t).map_err(|e| e.message().to_owned()))
                .map_err(|m| format!("--flip {spec:?}: {m}"))?;
            if f.at >= self.duration {
                return Err(format!(
                    "--flip {spec:?}: `at` must fall within the run ({})",
                    incident_wire::duration::format(self.duration)
                ));
            }
            self.flips.push(Flip {
                at: f.at,
                flag: f.flag.0,
                to: f.to,
                validate: f.validate,
            });
        }
        self.flips.sort_by_key(|f| f.at);
        if let Some(h) = self.hypothesis {
            let spec = HypothesisSpec {
                steady_until: h.steady_until,
                recover_within: h.recover_within,
                max_failed_pct: Some(h.max_failed_pct),
            };
            self.hypothesis = Some(
                hypothesis(&spec, &self.faults, &self.flips, self.duration)
                    .map_err(|m| format!("[hypothesis] with the command line's faults: {m}"))?,
            );
        }
        Ok(())
    }
}

/// A `[[faults]]` entry checked: its kind's parameters present, no other, within the run.
fn fault(
    f: &FaultSpec,
    duration: Duration,
    providers: &BTreeMap<Provider, Knobs>,
) -> Result<Fault, String> {
    let kind = f.kind.name();
    let fmt = incident_wire::duration::format;
    let given = [
        ("latency", f.latency.is_some()),
        ("jitter", f.jitter.is_some()),
        ("bandwidth", f.bandwidth.is_some()),
        ("delay", f.delay.is_some()),
        ("table", f.table.is_some()),
        ("mode", f.mode.is_some()),
        ("sessions", f.sessions.is_some()),
        ("provider", f.provider.is_some()),
        ("knobs", f.knobs.is_some()),
    ];
    let allowed: &[&str] = match f.kind {
        FaultKind::Latency => &["latency", "jitter"],
        FaultKind::Bandwidth => &["bandwidth"],
        FaultKind::SlowConnect => &["delay"],
        FaultKind::Lock => &["table", "mode"],
        FaultKind::Cpu => &["sessions"],
        FaultKind::Provider => &["provider", "knobs"],
        FaultKind::Hang
        | FaultKind::Refuse
        | FaultKind::Reset
        | FaultKind::Pause
        | FaultKind::Restart
        | FaultKind::Kill => &[],
    };
    if let Some((extra, _)) = given.iter().find(|g| g.1 && !allowed.contains(&g.0)) {
        let takes = if allowed.is_empty() {
            "it takes none".to_string()
        } else {
            format!("it takes {}", allowed.join(", "))
        };
        return Err(format!(
            "[[faults]] kind {kind:?}: field `{extra}` is not one of its parameters ({takes})"
        ));
    }
    let need = |name: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!("[[faults]] kind {kind:?} needs field `{name}`"))
        }
    };
    let mut out = Fault {
        kind: f.kind,
        at: f.at,
        until: f.at,
        faults: crate::chaos::Faults::default(),
        lock: None,
        sessions: 0,
        provider: None,
    };
    match f.kind {
        FaultKind::Latency => {
            need("latency", f.latency.is_some())?;
            out.faults.latency = f.latency.unwrap_or_default();
            out.faults.jitter = f.jitter.unwrap_or_default();
        }
        FaultKind::Bandwidth => {
            need("bandwidth", f.bandwidth.is_some_and(|b| b > 0))?;
            out.faults.bandwidth = f.bandwidth;
        }
        FaultKind::SlowConnect => {
            need("delay", f.delay.is_some())?;
            out.faults.slow_connect = f.delay.unwrap_or_default();
        }
        FaultKind::Hang => out.faults.hang = true,
        FaultKind::Refuse => out.faults.refuse = true,
        FaultKind::Lock => {
            need("table", f.table.is_some())?;
            let table = f.table.clone().unwrap_or_default();
            let ident = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            if table.is_empty() || !table.chars().all(ident) {
                return Err(format!(
                    "[[faults]] kind \"lock\": field `table` = {table:?} must be a table name (lowercase letters, digits, _)"
                ));
            }
            let mode = f
                .mode
                .as_deref()
                .unwrap_or("ACCESS EXCLUSIVE")
                .to_ascii_uppercase();
            if !LOCK_MODES.contains(&mode.as_str()) {
                return Err(format!(
                    "[[faults]] kind \"lock\": field `mode` = {mode:?} is not a lock mode ({})",
                    LOCK_MODES.join(", ")
                ));
            }
            out.lock = Some((table, mode));
        }
        FaultKind::Cpu => {
            let n = f.sessions.unwrap_or(2);
            if !(1..=64).contains(&n) {
                return Err(format!(
                    "[[faults]] kind \"cpu\": field `sessions` = {n} must be 1 to 64"
                ));
            }
            out.sessions = n;
        }
        FaultKind::Provider => {
            need("provider", f.provider.is_some())?;
            need("knobs", f.knobs.is_some())?;
            let provider = f.provider.unwrap_or(Provider::Ghl);
            let base = providers.get(&provider).cloned().unwrap_or_default();
            out.provider = Some((provider, storm_knobs(&base, f.knobs.as_ref())?));
        }
        FaultKind::Reset | FaultKind::Pause | FaultKind::Restart | FaultKind::Kill => {}
    }
    if f.at >= duration {
        return Err(format!(
            "[[faults]] field `at` = {} must fall within the run ({})",
            fmt(f.at),
            fmt(duration)
        ));
    }
    out.until = match (f.kind, f.lasts) {
        (k, Some(_)) if k.instant() => {
            return Err(format!(
                "[[faults]] kind {kind:?} is instant: it takes no `for`"
            ))
        }
        (k, None) if k.instant() => f.at,
        (FaultKind::Kill, None) => f.at,
        (_, None) => {
            return Err(format!(
                "[[faults]] kind {kind:?} needs field `for` (how long it lasts)"
            ))
        }
        (FaultKind::Kill, Some(d)) => (f.at + d).min(duration),
        (_, Some(d)) if d.is_zero() => {
            return Err("[[faults]] field `for` must be longer than 0".into())
        }
        (_, Some(d)) => (f.at + d).min(duration),
    };
    Ok(out)
}

/// A provider fault's knobs: the scenario's own for that provider with the fault's written
/// over them (tables merged key by key), checked as `[providers.*]` is.
fn storm_knobs(base: &Knobs, over: Option<&toml::Value>) -> Result<Knobs, String> {
    fn merge(into: &mut toml::Value, from: &toml::Value) {
        match (into, from) {
            (toml::Value::Table(a), toml::Value::Table(b)) => {
                for (k, v) in b {
                    match a.get_mut(k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (slot, v) => *slot = v.clone(),
        }
    }
    let Some(over) = over else {
        return Ok(base.clone());
    };
    if !over.is_table() {
        return Err(
            "[[faults]] kind \"provider\": field `knobs` must be a table, e.g. { errors = { server_error_pct = 50.0 } }"
                .into(),
        );
    }
    let mut value =
        toml::Value::try_from(base).map_err(|e| format!("[[faults]] the provider's knobs: {e}"))?;
    merge(&mut value, over);
    value.try_into::<Knobs>().map_err(|e| {
        format!(
            "[[faults]] kind \"provider\": field `knobs`: {}",
            e.message()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::take_fleet_keys;

    #[test]
    fn the_platform_keys_are_taken_out_of_service_only_and_every_offset_stays() {
        let text = "seed = 1\ninstances = 9\n[service] # the platform\npool_max = 10\ninstances = 3\nautoscale = { min = 1, max = 2, per_instance_concurrency = 5 }\n[pooler]\ninstances = 4\n";
        let (out, taken) = take_fleet_keys(text);
        assert_eq!(out.len(), text.len(), "offsets must not move");
        let keys: Vec<(&str, &str)> = taken.iter().map(|(k, v, _)| (*k, v.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("instances", "3"),
                (
                    "autoscale",
                    "{ min = 1, max = 2, per_instance_concurrency = 5 }"
                )
            ]
        );
        // Outside [service] the keys stay (and are refused there as unknown).
        assert!(out.starts_with("seed = 1\ninstances = 9\n"));
        assert!(out.ends_with("[pooler]\ninstances = 4\n"));
        assert!(out.contains("pool_max = 10") && !out.contains("instances = 3"));
        assert_eq!(&text[taken[0].2..taken[0].2 + 13], "instances = 3");
    }
}
