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
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::dataset::Scale;
use crate::postgres::PgSettings;
use crate::units::{parse_duration, MemSize};

/// A duration written as a string with a unit (`"500ms"`, `"3s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// The three rollout flags and `LOG_SLOW_PATHS`, by their exact names.
pub const FLAGS: [&str; 4] = [
    "INBOXXIA_EMAIL_SENT_ASYNC",
    "INBOX_COUNTS_CACHE_FALLBACK",
    "UNIPILE_HEALTH_GATE",
    "LOG_SLOW_PATHS",
];

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

/// The EMAIL_SENT webhook's label (`incident_wire::endpoint_label`).
pub const WEBHOOK_LABEL: &str = "POST /api/webhooks/email";
/// The inbox page's label.
pub const PAGE_LABEL: &str = "GET /";
/// The sidebar counts action's label.
pub const COUNTS_LABEL: &str = "POST /api/actions/inbox-counts";

/// Endpoints a budget can name.
pub const ENDPOINTS: [&str; 6] = [
    WEBHOOK_LABEL,
    PAGE_LABEL,
    COUNTS_LABEL,
    "POST /api/actions/ai-draft",
    "GET /api/cron/background-jobs",
    "GET /api/cron/followups",
];

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
pub struct PostgresSpec {
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// `"0"` for none.
    pub statement_timeout: Option<Dur>,
    #[serde(default = "default_shared_buffers")]
    pub shared_buffers: String,
    #[serde(default)]
    pub durable: bool,
    pub cpus: Option<f64>,
}

fn default_max_connections() -> u32 {
    60
}
fn default_shared_buffers() -> String {
    "128MB".into()
}

/// Service limits (see `inbox_service::config::Limits`); unset ones keep the service defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub pool_max: Option<u32>,
    pub acquire_timeout: Option<Dur>,
    pub statement_timeout: Option<Dur>,
    pub request_timeout: Option<Dur>,
    pub counts_query_timeout: Option<Dur>,
    pub counts_cache_ttl: Option<Dur>,
    pub ai_verify_budget: Option<Dur>,
    pub provider_timeout: Option<Dur>,
    pub provider_max_attempts: Option<u32>,
    pub provider_backoff: Option<Dur>,
    pub cron_batch_limit: Option<u32>,
    pub cron_time_budget: Option<Dur>,
    pub worker_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub from: Dur,
    pub to: Dur,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    Webhook,
    InboxPage,
    InboxCounts,
    AiDraft,
    CronBackgroundJobs,
    CronFollowups,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArrivalSpec {
    Constant {
        rate: f64,
    },
    Burst {
        rate: f64,
        from: Dur,
        to: Dur,
    },
    Ramp {
        from_rate: f64,
        to_rate: f64,
        from: Dur,
        to: Dur,
    },
    /// `[["0s", 2.0], ["60s", 80.0]]`: each rate holds until the next point.
    Schedule {
        points: Vec<(Dur, f64)>,
    },
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
    pub after: Dur,
    pub max: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: String,
    pub endpoint: EndpointKind,
    /// Webhooks: the event type.
    pub event: Option<String>,
    pub arrival: ArrivalSpec,
    pub retry: Option<RetrySpec>,
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

    /// The loadgen retry policy this stream declares.
    pub fn retry_policy(&self) -> Option<loadgen::RetryPolicy> {
        self.retry.as_ref().map(|r| loadgen::RetryPolicy {
            on_5xx: r.on.contains(&RetryOn::ServerError),
            on_timeout: r.on.contains(&RetryOn::Timeout),
            after: r.after.0,
            max: r.max,
        })
    }
}

impl ArrivalSpec {
    /// The arrival process, as the load generator runs it.
    pub fn to_arrival(&self) -> loadgen::Arrival {
        match self {
            ArrivalSpec::Constant { rate } => loadgen::Arrival::Constant { rate: *rate },
            ArrivalSpec::Burst { rate, from, to } => loadgen::Arrival::Burst {
                rate: *rate,
                from: from.0,
                to: to.0,
            },
            ArrivalSpec::Ramp {
                from_rate,
                to_rate,
                from,
                to,
            } => loadgen::Arrival::Ramp {
                from_rate: *from_rate,
                to_rate: *to_rate,
                from: from.0,
                to: to.0,
            },
            ArrivalSpec::Schedule { points } => loadgen::Arrival::Schedule {
                points: points
                    .iter()
                    .map(|(t, r)| (t.0.as_secs_f64(), *r))
                    .collect(),
            },
        }
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
    #[serde(default, deserialize_with = "opt_dur", serialize_with = "ser_opt_dur")]
    pub p95: Option<Duration>,
    /// Most DB writes on one request.
    pub max_db_writes: Option<u32>,
    /// Most external calls on one request.
    pub max_external_calls: Option<u32>,
    /// Most statement timeouts (service-wide `db_timeout`) in the run.
    pub max_statement_timeouts: Option<u64>,
}

fn opt_dur<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Ok(Some(Dur::deserialize(d)?.0))
}

fn ser_opt_dur<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
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
    duration: Dur,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default = "default_true")]
    poisson: bool,
    /// Moved to each stream; refused here with a message saying so.
    max_in_flight: Option<Spanned<toml::Value>>,
    client_timeout: Option<Dur>,
    /// A send that starts later than this after its intended time is late.
    late_after: Option<Dur>,
    /// Most late sends a stream may have, in % of its sends, before the arm is inconclusive.
    max_late_pct: Option<f64>,
    /// How long to let the queue drain after the load.
    drain: Option<Dur>,
    #[serde(default = "default_incident_phase")]
    incident_phase: String,
    dataset: DatasetSpec,
    postgres: PostgresSpec,
    #[serde(default)]
    service: ServiceSpec,
    #[serde(default)]
    providers: BTreeMap<Provider, Knobs>,
    phases: Vec<Spanned<Phase>>,
    streams: Vec<Spanned<StreamSpec>>,
    budgets: BTreeMap<EndpointName, Budget>,
    arms: Option<Vec<Spanned<ArmSpec>>>,
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
    pub service: ServiceSpec,
    pub providers: BTreeMap<Provider, Knobs>,
    pub phases: Vec<Phase>,
    pub streams: Vec<StreamSpec>,
    pub budgets: BTreeMap<EndpointName, Budget>,
    pub arms: Vec<Arm>,
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
        let duration = raw.duration.0;
        if duration.is_zero() {
            return Err(at(None, "field `duration` must be more than 0s".into()));
        }
        if let Some(old) = &raw.max_in_flight {
            return Err(at(
                Some(old.span()),
                "field `max_in_flight` is per stream now: set it in each [[streams]] that needs more than its default (peak rate × client_timeout)".into(),
            ));
        }
        let client_timeout = raw.client_timeout.map_or(Duration::from_secs(90), |d| d.0);
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
            if ph.from >= ph.to || ph.to.0 > duration {
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
                ArrivalSpec::Constant { rate } | ArrivalSpec::Burst { rate, .. } => *rate >= 0.0,
                ArrivalSpec::Ramp {
                    from_rate, to_rate, ..
                } => *from_rate >= 0.0 && *to_rate >= 0.0,
                ArrivalSpec::Schedule { points } => points.iter().all(|(_, r)| *r >= 0.0),
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
            if st.max_in_flight == Some(0) {
                return Err(bad("field `max_in_flight` must be at least 1".into()));
            }
            let mut st = st.clone();
            let retry = st.retry_policy();
            st.max_in_flight = Some(st.max_in_flight.unwrap_or_else(|| {
                loadgen::Stream::default_max_in_flight(
                    &st.arrival.to_arrival(),
                    retry.as_ref(),
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

        let p = &raw.postgres;
        let shared_buffers: MemSize = p
            .shared_buffers
            .parse()
            .map_err(|e| at(None, format!("field `postgres.shared_buffers`: {e}")))?;
        let postgres = PgSettings {
            max_connections: p.max_connections,
            statement_timeout: p.statement_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
            shared_buffers,
            fsync: p.durable,
            synchronous_commit: p.durable,
            cpus: p.cpus,
        };

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
            late_after: raw.late_after.map_or(Duration::from_millis(50), |d| d.0),
            max_late_pct,
            drain: raw.drain.map_or(Duration::from_secs(30), |d| d.0),
            incident_phase: raw.incident_phase,
            scale,
            postgres,
            service: raw.service,
            providers: raw.providers,
            phases,
            streams,
            budgets: raw.budgets,
            arms,
        })
    }

    /// The service limits for this scenario (service defaults where unset).
    pub fn limits(&self) -> Limits {
        let s = &self.service;
        let d = Limits::default();
        let pick = |v: Option<Dur>, default: Duration| v.map_or(default, |d| d.0);
        Limits {
            pool_max: s.pool_max.unwrap_or(d.pool_max),
            acquire_timeout: pick(s.acquire_timeout, d.acquire_timeout),
            statement_timeout: s.statement_timeout.map(|d| d.0),
            request_timeout: pick(s.request_timeout, d.request_timeout),
            counts_query_timeout: pick(s.counts_query_timeout, d.counts_query_timeout),
            counts_cache_ttl: pick(s.counts_cache_ttl, d.counts_cache_ttl),
            ai_verify_budget: pick(s.ai_verify_budget, d.ai_verify_budget),
            provider_timeout: pick(s.provider_timeout, d.provider_timeout),
            provider_max_attempts: s.provider_max_attempts.unwrap_or(d.provider_max_attempts),
            provider_backoff: pick(s.provider_backoff, d.provider_backoff),
            cron_batch_limit: s.cron_batch_limit.unwrap_or(d.cron_batch_limit),
            cron_time_budget: pick(s.cron_time_budget, d.cron_time_budget),
            worker_concurrency: s.worker_concurrency.unwrap_or(d.worker_concurrency),
            ..d
        }
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
