//! The run's results and how they are written: `report.json` (versioned schema, documented in
//! the README), `report.md` (a CI step summary), `junit.xml` (one testcase per arm × budget),
//! `report.html` (self-contained, inline SVG charts, no external URL).

pub mod html;
pub mod junit;
pub mod markdown;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::scenario::Expect;

/// Bumped on any incompatible change of `report.json`.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: String,
    pub scenario: ScenarioInfo,
    pub environment: Environment,
    /// `"pass"` when every arm showed what it must, else `"fail"`.
    pub verdict: String,
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
    pub cores: usize,
    pub postgres_backend: String,
    pub postgres_ready_s: f64,
    pub seed_s: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseFigures {
    pub phase: String,
    pub requests: u64,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EndpointReport {
    pub endpoint: String,
    pub requests: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub budget_p95_ms: Option<f64>,
    /// True when there is no p95 budget or it holds.
    pub within_budget: bool,
    pub status_counts: BTreeMap<String, u64>,
    pub error_categories: BTreeMap<String, u64>,
    pub late: u64,
    pub retries: u64,
    pub db_writes_per_request: Option<f64>,
    pub db_writes_max: u32,
    pub external_calls_per_request: Option<f64>,
    pub external_calls_max: u32,
    pub phases: Vec<PhaseFigures>,
    /// p95 per 1-second window: `(second, p95_ms, requests)`.
    pub windows: Vec<(u32, f64, u64)>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Invariants {
    /// EMAIL_SENT events the service acknowledged (2xx).
    pub acked: u64,
    /// Of those, applied (a message with their dedupe id exists).
    pub applied: u64,
    /// Dedupe ids applied more than once.
    pub duplicates: u64,
    /// Acknowledged but not applied after the drain.
    pub lost: u64,
    /// Jobs still queued or running after the drain.
    pub undrained_jobs: u64,
    pub holds: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    pub t: f64,
    pub pool_in_use: f64,
    pub pool_max: f64,
    pub pool_waiters: f64,
    pub queue_depth: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArmReport {
    pub name: String,
    /// Every switch of the service, by name.
    pub flags: BTreeMap<String, bool>,
    pub expect: Expect,
    pub as_expected: bool,
    pub checks: Vec<Check>,
    pub endpoints: Vec<EndpointReport>,
    /// Service-wide error counts by category (from `/metrics`).
    pub error_categories: BTreeMap<String, u64>,
    pub statement_timeouts: u64,
    pub late_arrivals: u64,
    pub unsent: u64,
    pub invariants: Invariants,
    pub timeline: Vec<TimelinePoint>,
    /// goose's own figures (timed from the actual start): `"METHOD name"` → …
    pub goose: BTreeMap<String, loadgen::engine::GooseEndpoint>,
    pub timings: ArmTimings,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ArmTimings {
    pub clone_s: f64,
    pub service_start_s: f64,
    pub load_s: f64,
    pub drain_s: f64,
}

/// Which flag moves which budget: the p95 with the flag off and on, others held equal.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attribution {
    pub flag: String,
    pub endpoint: String,
    pub off_arm: String,
    pub on_arm: String,
    pub off_p95_ms: Option<f64>,
    pub on_p95_ms: Option<f64>,
}

impl Report {
    /// Writes every output into `dir`.
    pub fn write_all(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write("report.json", serde_json::to_string_pretty(self)?)?;
        write("report.md", markdown::render(self))?;
        write("junit.xml", junit::render(self))?;
        write("report.html", html::render(self))?;
        Ok(())
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

/// Formats an optional millisecond figure.
pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}

/// Escapes text for XML and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
