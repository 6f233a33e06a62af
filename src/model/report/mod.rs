//! `report.json`'s schema: the run, its arms and their checks (whose names are in
//! [`checks`]), written by the matrix and chaos runs and read by every renderer and by
//! `compare`. The per-endpoint, per-arm measurements are in [`figures`].

pub mod checks;
pub mod figures;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use inbox_service::Flag;

use super::fleet::FleetReport;
use super::scenario::Expect;
pub use figures::*;

/// Bumped on any incompatible change of `report.json`. 2: arm `status` (inconclusive), the
/// load generator's per-stream figures, service-side latency, the writes/calls accounting.
pub const SCHEMA_VERSION: u32 = 3;

/// The run's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every arm showed what it must.
    Pass,
    /// An arm did not, or could not be judged (inconclusive).
    Fail,
}

/// What an arm showed, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmStatus {
    /// Every check held.
    AsExpected,
    /// A check failed: the service did not show what the arm must.
    NotAsExpected,
    /// The load generator fell behind its schedule: the figures say as much about the
    /// harness as about the service, so the arm is neither a pass nor a reproduction.
    Inconclusive,
    /// The run was stopped (a signal) while this arm ran: never judged.
    Interrupted,
}

impl ArmStatus {
    /// A short word for tables and progress lines.
    pub fn word(self) -> &'static str {
        match self {
            ArmStatus::AsExpected => "as expected",
            ArmStatus::NotAsExpected => "NOT as expected",
            ArmStatus::Inconclusive => "INCONCLUSIVE",
            ArmStatus::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: String,
    /// The command that made it, after `incident-lab` (`run scenarios/x.toml --arm all-on`);
    /// `None` in reports from before it was kept (they were all `matrix` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub scenario: ScenarioInfo,
    pub environment: Environment,
    pub verdict: Verdict,
    pub wall_time_s: f64,
    pub arms: Vec<ArmReport>,
    pub attribution: Vec<Attribution>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub source: String,
    pub description: String,
    pub duration_s: f64,
    pub seed: u64,
    pub incident_phase: String,
    pub phases: Vec<PhaseInfo>,
    pub dataset: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseInfo {
    pub name: String,
    pub from_s: f64,
    pub to_s: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Environment {
    /// The commit the harness was built from (`git describe`-like, `+dirty` when changed),
    /// or `unknown` outside a checkout.
    pub commit: String,
    /// CPU model and memory, as `/proc` says.
    pub machine: String,
    pub cores: usize,
    pub postgres_backend: String,
    /// The server's CPU and memory limits as applied (read back from the container with
    /// docker), or why there are none.
    #[serde(default)]
    pub postgres_limits: String,
    pub postgres_ready_s: f64,
    pub seed_s: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A check a run could not make, and why (a run against a service the harness did not start
/// cannot read its database without `--database-url`, nor the providers' counters).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub check: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArmReport {
    pub name: String,
    /// Every switch of the service, by name.
    pub flags: BTreeMap<String, bool>,
    pub expect: Expect,
    pub status: ArmStatus,
    /// `status == as_expected`.
    pub as_expected: bool,
    pub checks: Vec<Check>,
    pub endpoints: Vec<EndpointReport>,
    /// Service-wide error counts by category (from `/metrics`).
    pub error_categories: BTreeMap<String, u64>,
    pub statement_timeouts: u64,
    pub late_arrivals: u64,
    pub unsent: u64,
    pub load: LoadHealth,
    pub accounting: Accounting,
    pub invariants: Invariants,
    /// Cron ticks and counts sources (schema 3).
    #[serde(default)]
    pub background: Background,
    /// The health gate and the workspaces that reconnected mid-run (scenarios with
    /// `[reconnect]`).
    #[serde(default)]
    pub reconnect: Option<ReconnectReport>,
    pub timeline: Vec<TimelinePoint>,
    /// The instances and the pooler, when the scenario runs several or one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
    /// goose's own figures (timed from the actual start): `"METHOD name"` → …
    pub goose: BTreeMap<String, loadgen::engine::GooseEndpoint>,
    pub timings: ArmTimings,
    /// Checks this run could not make (runs with `--target`), named with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Faults injected, as they happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultApplied>,
    /// Flag flips made mid-run, with their effect on each budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flips: Vec<FlipApplied>,
    /// The steady-state hypothesis, judged before, during and after the faults and flips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<HypothesisReport>,
    /// When and why an `[abort]` threshold stopped the load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Aborted>,
}

/// An `[abort]` threshold crossed: the load stopped there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Aborted {
    /// Seconds into the load (on its schedule's clock) it was stopped.
    pub at_s: f64,
    /// The first second of the failing stretch.
    pub failing_from_s: u32,
    /// What failed, in words.
    pub reason: String,
}

/// One flag flip of the scenario's timeline, as it was made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlipApplied {
    pub flag: Flag,
    /// The value before and the value asked.
    pub from: bool,
    pub to: bool,
    /// When, seconds on the load's clock.
    pub at_s: f64,
    /// Made: the service answered the admin route with the new value.
    pub made: bool,
    /// What was checked before it (and what it found), or why it was not made.
    pub detail: String,
    /// Per budgeted endpoint, how the p95 moved after it.
    pub effects: Vec<FlipEffect>,
}

/// A flip's effect on one budget, from 1-second windows of intended send time up to the next
/// flip or the end of the load.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlipEffect {
    pub endpoint: String,
    pub budget_ms: f64,
    /// From the flip to the first window after which every window's p95 stays within the
    /// budget; `None`: it never did.
    pub time_to_recover_s: Option<f64>,
    /// From the flip to the first window whose p95 is over the budget; `None`: none was.
    pub time_to_degrade_s: Option<f64>,
}

/// The budgets over one stretch of the load's clock.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stretch {
    pub from_s: f64,
    pub to_s: f64,
    pub endpoints: Vec<StretchFigures>,
    /// Every endpoint within its budget and its failure limit.
    pub holds: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StretchFigures {
    pub endpoint: String,
    pub requests: u64,
    pub p95_ms: Option<f64>,
    pub budget_ms: f64,
    pub failed: u64,
    pub failed_pct: f64,
    pub holds: bool,
}

/// The steady-state hypothesis (as Chaos Toolkit has it): the budgets hold before the first
/// fault or flip, the deviation during them is recorded, and they hold again within the
/// declared time after.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HypothesisReport {
    pub before: Stretch,
    pub during: Stretch,
    pub after: Stretch,
    /// The run stopped at the first fault or flip: the system was not steady before it.
    pub aborted: bool,
    pub recover_within_s: Option<f64>,
    /// Per budgeted endpoint, from the end of the last fault or flip to the first window after
    /// which its p95 stays within budget (`None`: never).
    pub recovery: Vec<(String, Option<f64>)>,
}

/// One fault of the scenario's timeline, as it was applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultApplied {
    pub kind: String,
    /// What it did, e.g. `latency 100ms ± 20ms`.
    pub detail: String,
    /// From and to, seconds on the load's clock (equal for a reset).
    pub from_s: f64,
    pub to_s: f64,
    /// Connections open through the proxy when it started.
    pub connections_open: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ArmTimings {
    /// The arm's copy of the template (with the Phase 53 indexes, for an arm with the counts
    /// fix).
    pub clone_s: f64,
    /// Before the service starts: the fake providers, the row and effect baselines, the fault
    /// proxy and PgBouncer when the scenario has them.
    #[serde(default)]
    pub prepare_s: f64,
    pub service_start_s: f64,
    /// The unmeasured requests before the load (`warm_up`) and the counts scopes at its start.
    #[serde(default)]
    pub warm_up_s: f64,
    pub load_s: f64,
    pub drain_s: f64,
    /// Stopping the service (and the fleet, the pooler) until its sessions have left Postgres.
    #[serde(default)]
    pub stop_s: f64,
    /// After that: the invariant, the figures and checks, the recording written, the clone
    /// dropped.
    #[serde(default)]
    pub checks_s: f64,
}

impl ArmTimings {
    /// The arm's parts added up.
    pub fn total_s(&self) -> f64 {
        self.clone_s
            + self.prepare_s
            + self.service_start_s
            + self.warm_up_s
            + self.load_s
            + self.drain_s
            + self.stop_s
            + self.checks_s
    }
}

/// Which flag moves which budget: the p95 with the flag off and on, others held equal.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attribution {
    pub flag: Flag,
    pub endpoint: String,
    pub off_arm: String,
    pub on_arm: String,
    pub off_p95_ms: Option<f64>,
    pub on_p95_ms: Option<f64>,
}

impl ArmReport {
    /// An arm the run was stopped in: named, never judged, with no figures.
    pub fn interrupted(name: &str, flags: BTreeMap<String, bool>, expect: Expect) -> Self {
        Self {
            name: name.to_owned(),
            flags,
            expect,
            status: ArmStatus::Interrupted,
            as_expected: false,
            checks: Vec::new(),
            endpoints: Vec::new(),
            error_categories: BTreeMap::new(),
            statement_timeouts: 0,
            late_arrivals: 0,
            unsent: 0,
            load: LoadHealth::default(),
            accounting: Accounting::default(),
            invariants: Invariants::default(),
            background: Background::default(),
            reconnect: None,
            timeline: Vec::new(),
            fleet: None,
            goose: BTreeMap::new(),
            timings: ArmTimings::default(),
            skipped: Vec::new(),
            faults: Vec::new(),
            flips: Vec::new(),
            hypothesis: None,
            aborted: None,
        }
    }
}

impl Report {
    /// The endpoints with a p95 budget in any arm, sorted.
    pub fn budgeted_endpoints(&self) -> Vec<String> {
        let mut e: Vec<String> = self
            .arms
            .iter()
            .flat_map(|a| a.endpoints.iter())
            .filter(|e| e.budget_p95_ms.is_some())
            .map(|e| e.endpoint.clone())
            .collect();
        e.sort();
        e.dedup();
        e
    }

    /// Reads a `report.json`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a report.json", path.display()))?;
        anyhow::ensure!(
            report.schema_version == SCHEMA_VERSION,
            "{} has schema_version {}, this tool reads {SCHEMA_VERSION}",
            path.display(),
            report.schema_version
        );
        Ok(report)
    }
}
