//! The command line: parses arguments, runs a subcommand, maps the outcome to an exit code.
//!
//! Exit codes (the contract CI relies on): 0 every expectation held; 1 an expectation failed;
//! 2 bad usage or an invalid scenario; 3 infrastructure could not start; 4 `compare` had too
//! little data to judge a change (inconclusive: neither a pass nor a regression).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::dataset::Template;
use crate::postgres::{PgServer, ProvisionRequest};

mod args;
mod calibrate;
mod ceiling;
mod chaos;
mod compare;
mod db;
mod logs;
mod matrix;
mod report;
mod target;
mod up;

use ceiling::ceiling;
use chaos::chaos_list;
use compare::compare;
use db::db_up;
use matrix::matrix;
use report::report_html;
use target::{merge, run_target};
use up::up;

pub use args::*;

/// A failure, classified by the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Exit 1: the run worked, and an expectation did not hold.
    #[error("{0}")]
    Expectation(String),
    /// Exit 2: bad usage or an invalid scenario.
    #[error("{0}")]
    Usage(String),
    /// Exit 3: infrastructure could not start.
    #[error("{0:#}")]
    Infrastructure(anyhow::Error),
    /// Exit 4: too little data to judge (`compare`): neither a pass nor a failure.
    #[error("{0}")]
    Inconclusive(String),
    /// Exit 5: an `[abort]` threshold stopped the load (it was hurting the target).
    #[error("{0}")]
    Aborted(String),
    /// Exit 128 + the signal: the run was asked to stop, and cleaned up.
    #[error("interrupted by {}: stopped and cleaned up", .0.name())]
    Interrupted(crate::interrupt::Stop),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Expectation(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Infrastructure(_) => 3,
            Failure::Inconclusive(_) => 4,
            Failure::Aborted(_) => 5,
            Failure::Interrupted(stop) => stop.exit_code(),
        }
    }
}

/// The longest a run waits for its `--start-at` (seconds).
pub const MAX_START_WAIT_S: i64 = 15 * 60;

/// Parses the process arguments, runs, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Service) {
        crate::telemetry::init_service();
    } else {
        crate::telemetry::init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    // The service handles its own signals (a graceful shutdown); the harness owns them.
    if !matches!(cli.command, Command::Service) {
        crate::interrupt::install();
    }
    match cli.command {
        Command::Db(DbCommand::Up(args)) => db_up(args).await,
        Command::Matrix(args) => {
            let out = args.out.clone();
            matrix(
                "matrix",
                &args.scenario,
                &args.backend,
                out,
                args.arms.clone(),
                &args.chaos,
                args.repeat,
            )
            .await
        }
        Command::Run(args) if args.target.target.is_some() => {
            if !args.chaos.faults.is_empty()
                || !args.chaos.flips.is_empty()
                || args.chaos.access_log
            {
                return Err(Failure::Usage(
                    "--fault, --flip and --access-log need a run the harness starts (without --target)".into(),
                ));
            }
            run_target(args).await
        }
        Command::Run(args) => {
            if let Some(flag) = args.target.needs_target() {
                return Err(Failure::Usage(format!(
                    "{flag} needs --target URL (a run against a service that is already running)"
                )));
            }
            matrix(
                "run",
                &args.scenario,
                &args.backend,
                args.out.clone(),
                Some(vec![args.arm.clone()]),
                &args.chaos,
                1,
            )
            .await
        }
        Command::Up(args) => up(args).await,
        Command::Merge(args) => merge(args).await,
        Command::Fakes(args) => {
            let scenario = crate::model::Scenario::load(&args.scenario)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            crate::matrix::fakes::serve_alone(&scenario, args.listen)
                .await
                .map_err(Failure::Infrastructure)?;
            println!("stopped");
            Ok(())
        }
        Command::Compare(args) => compare(&args),
        Command::Ceiling(args) => ceiling(args).await,
        Command::EchoServer {
            listen,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| crate::ceiling::ServerCert { cert, key });
            crate::ceiling::echo_server(listen, tls)
                .await
                .map_err(Failure::Infrastructure)
        }
        Command::Scenario(ScenarioCommand::FromLogs(args)) => logs::from_logs(&args),
        Command::Triage(args) => logs::triage(&args),
        Command::Replay(args) => logs::replay(args).await,
        Command::Calibrate(args) => calibrate::calibrate(args).await,
        Command::Logs(LogsCommand::Export(args)) => logs::export(&args),
        Command::DocBlock { name, files } => {
            let files: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
            let block = crate::logs::doc_blocks::render(&name, &files, std::path::Path::new("."))
                .map_err(Failure::Usage)?;
            print!("{block}");
            Ok(())
        }
        Command::Chaos(ChaosCommand::List) => {
            print!("{}", chaos_list());
            Ok(())
        }
        Command::Report(args) => {
            let report = crate::report::Report::read(&args.report)
                .map_err(|e| Failure::Usage(format!("{e:#}")))?;
            if let Some(html) = &args.html {
                return report_html(&report, html, &args);
            }
            if args.summary {
                print!("{}", crate::report::markdown::summary(&report));
            } else {
                print!("{}", crate::report::markdown::render(&report));
            }
            Ok(())
        }
        Command::Service => {
            exit_with_parent();
            inbox_service::serve_from_env()
                .await
                .map_err(Failure::Infrastructure)
        }
    }
}

/// When started by the harness (`INCIDENT_LAB_PARENT_PID`), the service stops itself (as on
/// SIGTERM) once that process is gone, so a harness killed with SIGKILL leaves no service.
fn exit_with_parent() {
    let Some(parent) = std::env::var(crate::service_proc::PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if std::os::unix::process::parent_id() != parent {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGTERM,
                );
                return;
            }
        }
    });
}

/// Runs `work` unless the process is asked to stop first; then `work` is dropped, and with
/// it every resource it holds (Drop does the teardown).
pub async fn or_stop<F: Future>(work: F) -> Result<F::Output, Failure> {
    tokio::select! {
        out = work => Ok(out),
        stop = crate::interrupt::stopped() => Err(Failure::Interrupted(stop)),
    }
}

/// Provisions Postgres (exit 3 when it cannot).
async fn provision(request: &ProvisionRequest) -> Result<PgServer, Failure> {
    PgServer::provision(request)
        .await
        .map_err(|e| Failure::Infrastructure(e.into()))
}

/// Which backend a server is, how fast it was ready and why, and a local cluster's data
/// directory and postmaster.
fn provisioned(server: &PgServer) -> String {
    let mut said = format!(
        "postgres: {} backend, ready in {:.2}s ({}); limits: {}",
        server.backend(),
        server.ready_in().as_secs_f64(),
        server.why(),
        server.limits()
    );
    if let Some(cluster) = server.local_cluster() {
        said.push_str(&format!(
            "\ndata dir: {} (postmaster pid {})",
            cluster.dir().display(),
            cluster.pid()
        ));
    }
    said
}

/// Exit 2 for an arm the scenario does not have, naming those it has.
fn unknown_arm(path: &std::path::Path, scenario: &crate::model::Scenario, name: &str) -> Failure {
    let known: Vec<&str> = scenario.arms.iter().map(|a| a.name.as_str()).collect();
    Failure::Usage(format!(
        "{}: no arm {name:?}; arms are {}",
        path.display(),
        known.join(", ")
    ))
}

/// Provisions Postgres as the scenario constrains it and seeds its template (exit 3 when either
/// fails; a stop request wins). On an error the server is dropped, which tears it down.
async fn provision_and_seed(
    scenario: &crate::model::Scenario,
    backend: &BackendArgs,
) -> Result<(PgServer, Template), Failure> {
    let request = backend.request(scenario.postgres.clone());
    let server = or_stop(provision(&request)).await??;
    eprintln!("{}", provisioned(&server));
    eprintln!("seeding {} (seed {}) …", scenario.scale, scenario.seed);
    let template = or_stop(Template::prepare(
        &server,
        scenario.scale,
        scenario.seed as i64,
    ))
    .await?
    .map_err(|e| Failure::Infrastructure(e.into()))?;
    eprintln!("seeded in {:.1}s", template.timings.seed.as_secs_f64());
    Ok((server, template))
}

/// The service's secrets from its own variables (WEBHOOK_SECRET, CRON_SECRET, SESSION_SECRET,
/// and ADMIN_TOKEN when `admin` is asked for): `None` when none is set; exit 2 naming the ones
/// missing when only some are.
fn secrets_from_env(admin: bool) -> Result<Option<inbox_service::config::Secrets>, Failure> {
    use inbox_service::config::var;
    let mut names = vec![var::WEBHOOK_SECRET, var::SESSION_SECRET, var::CRON_SECRET];
    if admin {
        names.push(var::ADMIN_TOKEN);
    }
    let get = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let missing: Vec<&str> = names.iter().copied().filter(|n| get(n).is_none()).collect();
    if missing.len() == names.len() {
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(Failure::Usage(format!(
            "the service's secrets are set only in part: {} not set (set all of {}, or none)",
            missing.join(", "),
            names.join(", ")
        )));
    }
    Ok(Some(inbox_service::config::Secrets {
        webhook: get(var::WEBHOOK_SECRET).unwrap_or_default(),
        cron: get(var::CRON_SECRET).unwrap_or_default(),
        admin: get(var::ADMIN_TOKEN).unwrap_or_default(),
        session: get(var::SESSION_SECRET).unwrap_or_default(),
    }))
}

/// Loads the scenario (exit 2) and finds its arm `name` (exit 2 naming those it has).
fn scenario_and_arm(
    path: &std::path::Path,
    name: &str,
) -> Result<(crate::model::Scenario, String, crate::model::Arm), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", path.display())))?;
    let scenario = crate::model::Scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let arm = scenario
        .arms
        .iter()
        .find(|a| a.name == name)
        .cloned()
        .ok_or_else(|| unknown_arm(path, &scenario, name))?;
    Ok((scenario, text, arm))
}
