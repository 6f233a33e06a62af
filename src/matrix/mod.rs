//! The incident matrix: one Postgres, one seeded template; per arm a fresh clone, fresh fake
//! providers and a fresh service process with the arm's switches; the scenario's load; a drain
//! of the job queue; the invariant; a verdict against what the arm must show.
//!
//! Arms run one after another: goose's killswitch is process-wide, and arms must not share
//! the machine's two cores. The reports are rewritten after every arm, so a failure in a late
//! arm keeps the earlier ones.
//!
//! # Layout
//! - [`wiring`]: scenario → the load generator's plan and the service's environment.
//! - [`arm`]: one arm's life, with everything it starts owned by one guard.
//! - [`fakes`]: the fake providers on loopback.
//! - [`stack`]: one arm's service, fakes and database, up until Ctrl-C (`incident-lab up`).
//! - [`target`]: the load against a service the harness did not start, sharded or not, and the
//!   merge of the shards (`run --target`, `merge`).
//! - [`watch`]: scraping, progress and CPU beside the load.
//! - [`figures`]: client-side and service-side figures, the generator's health.
//! - [`invariant`]: exactly-once, and the rows Postgres counted.
//! - [`gate`]: the Unipile health gate when accounts reconnect mid-run (false skips).
//! - [`verdict`]: the checks, the arm's status, attribution.

mod arm;
pub mod fakes;
pub mod figures;
mod gate;
pub mod invariant;
pub mod rails;
pub mod stack;
pub mod target;
pub mod verdict;
pub mod watch;
pub(crate) mod wiring;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::dataset::Template;
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::report::{
    ArmReport, ArmStatus, Environment, PhaseInfo, Report, ScenarioInfo, Verdict, SCHEMA_VERSION,
};

/// Where a run writes and what it runs.
pub struct RunOptions {
    pub out: PathBuf,
    /// The `incident-lab` binary whose `service` subcommand runs the service.
    pub service_bin: PathBuf,
    /// Only these arms (by name), in the scenario's order.
    pub only: Option<Vec<String>>,
    /// The command, after `incident-lab`, as the report names it (`matrix …`, `run … --arm X`).
    pub command: String,
}

/// Runs the arms on a provisioned server and template; returns the report (also written).
pub async fn run(
    scenario: &Scenario,
    server: &PgServer,
    template: &Template,
    options: &RunOptions,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let arms: Vec<&Arm> = scenario
        .arms
        .iter()
        .filter(|a| {
            options
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&a.name))
        })
        .collect();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let environment = environment(server, template);
    let mut reports = Vec::new();
    let mut report = assemble(scenario, &environment, started, Vec::new());
    for (i, arm) in arms.iter().enumerate() {
        eprintln!("[{}/{}] arm {} …", i + 1, arms.len(), arm.name);
        let running = arm::run_arm(
            scenario,
            server,
            template,
            arm,
            &options.service_bin,
            &options.out,
        );
        // A signal stops the arm where it is: its future is dropped, and with it the service
        // (killed), the fakes and the load; it is reported as interrupted, never judged.
        let finished = tokio::select! {
            r = running => Some(r),
            _ = crate::interrupt::stopped() => None,
        };
        let Some(arm_report) = finished else {
            loadgen::stop();
            eprintln!("[{}/{}] arm {}: interrupted", i + 1, arms.len(), arm.name);
            let flags = arm
                .switches
                .to_map()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            reports.push(ArmReport::interrupted(&arm.name, flags, arm.expect));
            report = assemble(scenario, &environment, started, reports);
            report.command = Some(options.command.clone());
            report.write_all(&options.out)?;
            return Ok(report);
        };
        let arm_report = arm_report.with_context(|| format!("arm {}", arm.name))?;
        eprintln!("[{}/{}] {}", i + 1, arms.len(), one_line(&arm_report));
        reports.push(arm_report);
        report = assemble(scenario, &environment, started, reports.clone());
        report.command = Some(options.command.clone());
        report.write_all(&options.out)?;
    }
    Ok(report)
}

/// `arm: as expected (POST /api/webhooks/email 7 ms, …)`, and for an arm that could not be
/// judged the reason.
pub fn one_line(a: &ArmReport) -> String {
    let p95s: Vec<String> = a
        .endpoints
        .iter()
        .filter(|e| e.budget_p95_ms.is_some())
        .map(|e| format!("{} {}", e.endpoint, crate::report::ms(e.p95_ms)))
        .collect();
    let mut line = format!("arm {}: {} ({})", a.name, a.status.word(), p95s.join(", "));
    if a.status == ArmStatus::Inconclusive {
        for c in a
            .checks
            .iter()
            .filter(|c| !c.passed && c.name == verdict::LOAD_CHECK)
        {
            line.push_str(&format!("\n    {}", c.detail));
        }
    }
    line
}

fn assemble(
    scenario: &Scenario,
    environment: &Environment,
    started: Instant,
    arms: Vec<ArmReport>,
) -> Report {
    let verdict = if !arms.is_empty() && arms.iter().all(|a| a.status == ArmStatus::AsExpected) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    Report {
        schema_version: SCHEMA_VERSION,
        tool: format!("incident-lab {}", env!("CARGO_PKG_VERSION")),
        command: None,
        scenario: ScenarioInfo {
            name: scenario.name.clone(),
            source: scenario.source.clone(),
            description: scenario.description.clone(),
            duration_s: scenario.duration.as_secs_f64(),
            seed: scenario.seed,
            incident_phase: scenario.incident_phase.clone(),
            phases: scenario
                .phases
                .iter()
                .map(|p| PhaseInfo {
                    name: p.name.clone(),
                    from_s: p.from.as_secs_f64(),
                    to_s: p.to.as_secs_f64(),
                })
                .collect(),
            dataset: scenario.scale.to_string(),
        },
        environment: environment.clone(),
        verdict,
        wall_time_s: started.elapsed().as_secs_f64(),
        attribution: verdict::attribution(&arms, scenario),
        arms,
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn environment(server: &PgServer, template: &Template) -> Environment {
    Environment {
        commit: commit(),
        machine: machine(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        postgres_backend: server.backend().to_string(),
        postgres_limits: server.limits(),
        postgres_ready_s: server.ready_in().as_secs_f64(),
        seed_s: template.timings.seed.as_secs_f64(),
    }
}

/// The commit of the checkout the harness was built from, `+dirty` with local changes;
/// `unknown` when that checkout is not there.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}+dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// `"<cpu model>, N cores, M GiB"` from `/proc`.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}
