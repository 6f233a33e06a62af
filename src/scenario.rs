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
}

/// What a `[[faults]]` entry does to the database link (through the fault proxy between the
/// service and Postgres).
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
}

impl FaultKind {
    /// Every kind: its parameters and what it does, as `chaos list` prints them.
    pub const ALL: [(FaultKind, &'static str, &'static str); 6] = [
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
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Hang => "hang",
            FaultKind::Refuse => "refuse",
            FaultKind::SlowConnect => "slow_connect",
            FaultKind::Reset => "reset",
        }
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
}

/// A validated fault: from `at` to `until` on the load's clock (`until == at` for a reset).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub at: Duration,
    pub until: Duration,
    /// What the proxy does while it lasts.
    pub faults: crate::chaos::Faults,
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
    /// Faults on the database link, on the load's timeline.
    pub faults: Vec<Fault>,
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
        let raw: ScenarioFile =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
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
            faults.push(fault(f.get_ref(), duration).map_err(|m| at(Some(f.span()), m))?);
        }

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
            providers: raw.providers,
            reconnect,
            phases,
            streams,
            budgets: raw.budgets,
            arms,
            observed: raw.observed,
            faults,
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

/// A `[[faults]]` entry checked: its kind's parameters present, no other, within the run.
fn fault(f: &FaultSpec, duration: Duration) -> Result<Fault, String> {
    let kind = f.kind.name();
    let fmt = incident_wire::duration::format;
    let given = [
        ("latency", f.latency.is_some()),
        ("jitter", f.jitter.is_some()),
        ("bandwidth", f.bandwidth.is_some()),
        ("delay", f.delay.is_some()),
    ];
    let allowed: &[&str] = match f.kind {
        FaultKind::Latency => &["latency", "jitter"],
        FaultKind::Bandwidth => &["bandwidth"],
        FaultKind::SlowConnect => &["delay"],
        FaultKind::Hang | FaultKind::Refuse | FaultKind::Reset => &[],
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
    let mut faults = crate::chaos::Faults::default();
    match f.kind {
        FaultKind::Latency => {
            need("latency", f.latency.is_some())?;
            faults.latency = f.latency.unwrap_or_default();
            faults.jitter = f.jitter.unwrap_or_default();
        }
        FaultKind::Bandwidth => {
            need("bandwidth", f.bandwidth.is_some_and(|b| b > 0))?;
            faults.bandwidth = f.bandwidth;
        }
        FaultKind::SlowConnect => {
            need("delay", f.delay.is_some())?;
            faults.slow_connect = f.delay.unwrap_or_default();
        }
        FaultKind::Hang => faults.hang = true,
        FaultKind::Refuse => faults.refuse = true,
        FaultKind::Reset => {}
    }
    if f.at >= duration {
        return Err(format!(
            "[[faults]] field `at` = {} must fall within the run ({})",
            fmt(f.at),
            fmt(duration)
        ));
    }
    let until = match (f.kind, f.lasts) {
        (FaultKind::Reset, Some(_)) => {
            return Err("[[faults]] kind \"reset\" is instant: it takes no `for`".into())
        }
        (FaultKind::Reset, None) => f.at,
        (_, None) => {
            return Err(format!(
                "[[faults]] kind {kind:?} needs field `for` (how long it lasts)"
            ))
        }
        (_, Some(d)) if d.is_zero() => {
            return Err("[[faults]] field `for` must be longer than 0".into())
        }
        (_, Some(d)) => (f.at + d).min(duration),
    };
    Ok(Fault {
        kind: f.kind,
        at: f.at,
        until,
        faults,
    })
}
