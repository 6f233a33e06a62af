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
mod logs;

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
            if !args.chaos.faults.is_empty() || !args.chaos.flips.is_empty() {
                return Err(Failure::Usage(
                    "--fault and --flip need a run the harness starts (without --target)".into(),
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
            let scenario = crate::scenario::Scenario::load(&args.scenario)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            crate::matrix::fakes::serve_alone(&scenario, args.listen)
                .await
                .map_err(Failure::Infrastructure)?;
            println!("stopped");
            Ok(())
        }
        Command::Compare(args) => compare(&args),
        Command::Ceiling(args) => ceiling(args).await,
        Command::EchoServer { listen } => crate::ceiling::echo_server(listen)
            .await
            .map_err(Failure::Infrastructure),
        Command::Scenario(ScenarioCommand::FromLogs(args)) => logs::from_logs(&args),
        Command::Triage(args) => logs::triage(&args),
        Command::Replay(args) => logs::replay(args).await,
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

/// `ceiling`: the generator against wrk; unless `--no-database`, ingest and drain on a
/// provisioned Postgres against pgbench.
async fn ceiling(args: CeilingArgs) -> Result<(), Failure> {
    if !(args.soak_rate.is_finite() && args.soak_rate > 0.0) {
        return Err(Failure::Usage(format!(
            "--soak-rate must be a positive number of requests per second, not {}",
            args.soak_rate
        )));
    }
    let opts = crate::ceiling::CeilingOptions {
        rates: args.rates.clone(),
        step: args.step,
        max_lateness_p99: args.max_lateness,
        connections: args.connections,
        refine: args.refine,
        out: args.out.clone(),
        soak: args.soak.map(|d| (d, args.soak_rate)),
    };
    let report = if args.no_database {
        crate::ceiling::run(&opts, None).await
    } else {
        let scenario = crate::scenario::Scenario::load(&args.scenario)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let service_bin = crate::service_proc::find_binary().map_err(Failure::Infrastructure)?;
        let (server, template) = provision_and_seed(&scenario, &args.backend).await?;
        let db = crate::ceiling::DatabaseRun {
            scenario: &scenario,
            server: &server,
            template: &template,
            service_bin: &service_bin,
            rates: args.ingest_rates.clone(),
        };
        let report = crate::ceiling::run(&opts, Some(db)).await;
        server.shutdown().await;
        report
    };
    if let Some(stop) = crate::interrupt::requested() {
        return Err(Failure::Interrupted(stop));
    }
    let report = report.map_err(Failure::Infrastructure)?;
    print!("{}", crate::ceiling::markdown(&report));
    println!("\nwrote {}", args.out.join("ceiling.json").display());
    Ok(())
}

/// `report --html FILE [--screenshot PNG]`: the page, and what a browser saw of it.
fn report_html(
    report: &crate::report::Report,
    html: &std::path::Path,
    args: &args::ReportArgs,
) -> Result<(), Failure> {
    use crate::report::browser;
    std::fs::write(html, crate::report::html::render(report))
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", html.display())))?;
    println!("wrote {}", html.display());
    let Some(png) = &args.screenshot else {
        return Ok(());
    };
    let chromium = browser::find_chromium().ok_or_else(|| {
        Failure::Infrastructure(anyhow::anyhow!(
            "no Chromium for --screenshot: install Debian's chromium package (scripts/setup does) or set {} to a Chromium binary",
            browser::CHROMIUM_ENV
        ))
    })?;
    let view = browser::open(&chromium, html, args.screenshot_height).map_err(|e| {
        Failure::Infrastructure(e.context(format!("{} in {}", html.display(), chromium.display())))
    })?;
    std::fs::write(png, &view.png)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", png.display())))?;
    let (w, h) = browser::png_size(&view.png).unwrap_or_default();
    println!(
        "opened in {}: \"{}\", sections {}, {} charts, page {} px tall; {} console errors, {} requests beyond the page; wrote {} ({w}×{h})",
        chromium.display(),
        view.title,
        view.sections.join(" "),
        view.charts,
        view.height,
        view.console_errors.len(),
        view.requests.len(),
        png.display()
    );
    for e in &view.console_errors {
        println!("  console: {e}");
    }
    for r in &view.requests {
        println!("  request: {r}");
    }
    if view.clean() {
        Ok(())
    } else {
        Err(Failure::Expectation(format!(
            "{} is not self-contained and quiet in a browser: {} console errors, {} requests",
            html.display(),
            view.console_errors.len(),
            view.requests.len()
        )))
    }
}

/// `chaos list`: every fault kind, its parameters and what it does.
fn chaos_list() -> String {
    let mut out = String::from(
        "Faults on a scenario's timeline: on the database link (through a TCP proxy between the\nservice and Postgres; they reach connections already open), on Postgres itself, on a fake\nprovider, on the service. In a scenario:\n\n  [[faults]]\n  at = \"5s\"        # on the load's clock\n  for = \"8s\"       # how long (none for reset and restart)\n  kind = \"latency\"\n  latency = \"40ms\"\n  jitter = \"10ms\"\n\nor on the command line: --fault at=5s,for=8s,kind=latency,latency=40ms\n\n",
    );
    for (kind, params, what) in crate::scenario::FaultKind::ALL {
        out.push_str(&format!(
            "{:<13} {what}\n{:<13} parameters: {params}\n",
            kind.name(),
            ""
        ));
    }
    out.push_str("\nOverlapping link faults combine (the worst of each). Everything is undone when the load ends,\nor on an error or Ctrl-C: the link healed, Postgres resumed, locks released, providers restored.\nA run with faults checks that every acknowledged EMAIL_SENT is applied exactly once, in every arm.\n\nFlag flips, through the service's /admin/flags:\n\n  [[flips]]\n  at = \"10s\"\n  flag = \"INBOXXIA_EMAIL_SENT_ASYNC\"\n  to = true\n  validate = [\"queue_writes\"]   # optional: checked just before; no flip if it fails\n\n  (or --flip at=10s,flag=INBOXXIA_EMAIL_SENT_ASYNC,to=true)\n\nEach flip reports, per budget, the time to recover and the time to degrade.\n\nThe steady-state hypothesis:\n\n  [hypothesis]\n  recover_within = \"4s\"   # after the last fault or flip, every budget holds again within this\n  max_failed_pct = 1.0     # most failed requests per endpoint for a stretch to be steady\n\nBefore the first fault or flip the budgets must hold, or the load stops there (\"not steady\",\nexit 1); during, the deviation is recorded; after, recovery is judged.\n");
    out
}

/// `compare`: the regressions table, exit 1 when there is one.
fn compare(args: &CompareArgs) -> Result<(), Failure> {
    use crate::compare::{Gate, Side};
    let read = |p: &std::path::Path| Side::read(p).map_err(|e| Failure::Usage(format!("{e:#}")));
    let (base, new) = (read(&args.base)?, read(&args.new)?);
    let gate = Gate {
        max_regression: args.max_regression,
        min_delta_ms: args.min_delta.as_secs_f64() * 1000.0,
        budget_share: args.budget_share,
        alpha: args.alpha,
    };
    let found = crate::compare::compare(&base, &new, &gate);
    println!(
        "baseline: {} run(s) of {}; new: {} run(s)",
        base.reports.len(),
        args.base.display(),
        new.reports.len()
    );
    if !crate::compare::shared(&base, &new) {
        return Err(Failure::Inconclusive(
            "inconclusive: the baseline and the new run share no arm and endpoint with a p95"
                .into(),
        ));
    }
    print!("{}", crate::compare::table(&found, &gate));
    let count = |v| found.iter().filter(|c| c.verdict == v).count();
    let (regressions, inconclusive) = (
        count(crate::compare::Verdict::Regression),
        count(crate::compare::Verdict::Inconclusive),
    );
    if regressions > 0 {
        Err(Failure::Expectation(format!(
            "{regressions} p95 regression(s)"
        )))
    } else if inconclusive > 0 {
        Err(Failure::Inconclusive(format!(
            "inconclusive: {inconclusive} p95 change(s) with too little data to judge"
        )))
    } else {
        Ok(())
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

/// Provisions Postgres and says which backend it got, how fast, and why.
async fn provision(request: &ProvisionRequest) -> Result<PgServer, Failure> {
    let server = PgServer::provision(request)
        .await
        .map_err(|e| Failure::Infrastructure(e.into()))?;
    println!(
        "postgres: {} backend, ready in {:.2}s ({}); limits: {}",
        server.backend(),
        server.ready_in().as_secs_f64(),
        server.why(),
        server.limits()
    );
    if let Some(cluster) = server.local_cluster() {
        println!(
            "data dir: {} (postmaster pid {})",
            cluster.dir().display(),
            cluster.pid()
        );
    }
    Ok(server)
}

async fn db_up(args: DbUpArgs) -> Result<(), Failure> {
    let scale = args.scale.scale();
    scale.validate().map_err(Failure::Usage)?;
    let request = args.postgres.request();
    let server = or_stop(provision(&request)).await??;
    println!("seeding {scale} (seed {}) …", args.scale.seed);
    let template = or_stop(Template::prepare(&server, scale, args.scale.seed))
        .await?
        .map_err(|e| Failure::Infrastructure(e.into()))?;
    let (db, clone_time) = or_stop(template.clone_for_arm(&server, "workbench", false))
        .await?
        .map_err(|e| Failure::Infrastructure(e.into()))?;
    println!(
        "migrated in {:.2}s, seeded in {:.2}s, cloned in {:.2}s",
        template.timings.migrate.as_secs_f64(),
        template.timings.seed.as_secs_f64(),
        clone_time.as_secs_f64()
    );
    println!(
        "url: {}",
        server.url(&db, server.backend() != crate::postgres::Backend::Url)
    );
    println!("ready; Ctrl-C to stop and clean up");
    // Stopping is how `db up` ends: clean up and exit 0.
    crate::interrupt::stopped().await;
    server.shutdown().await;
    println!("stopped: cleaned up");
    Ok(())
}

/// Exit 2 for an arm the scenario does not have, naming those it has.
fn unknown_arm(
    path: &std::path::Path,
    scenario: &crate::scenario::Scenario,
    name: &str,
) -> Failure {
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
    scenario: &crate::scenario::Scenario,
    backend: &BackendArgs,
) -> Result<(PgServer, Template), Failure> {
    let request = backend.request(scenario.postgres.clone());
    let server = or_stop(provision(&request)).await??;
    println!("seeding {} (seed {}) …", scenario.scale, scenario.seed);
    let template = or_stop(Template::prepare(
        &server,
        scenario.scale,
        scenario.seed as i64,
    ))
    .await?
    .map_err(|e| Failure::Infrastructure(e.into()))?;
    println!("seeded in {:.1}s", template.timings.seed.as_secs_f64());
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
) -> Result<(crate::scenario::Scenario, String, crate::scenario::Arm), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", path.display())))?;
    let scenario =
        crate::scenario::Scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let arm = scenario
        .arms
        .iter()
        .find(|a| a.name == name)
        .cloned()
        .ok_or_else(|| unknown_arm(path, &scenario, name))?;
    Ok((scenario, text, arm))
}

/// `run --target`: the arm's load (or one shard of it) against a running service.
async fn run_target(args: RunArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let t = &args.target;
    let (scenario, text, arm) = scenario_and_arm(&args.scenario, &args.arm)?;
    let secrets = secrets_from_env(false)?.ok_or_else(|| {
        Failure::Usage(
            "--target needs the service's secrets in the environment: WEBHOOK_SECRET, SESSION_SECRET and CRON_SECRET (`incident-lab up` prints them)".into(),
        )
    })?;
    let shard = t.shard.unwrap_or_default();
    if let Some(at) = t.start_at {
        let late = crate::matrix::unix_now() - at;
        if late > 0 {
            return Err(Failure::Usage(format!(
                "--start-at {at} was {late} s ago: give a time in the future"
            )));
        }
        // A start time hours or years ahead is a stale manifest, not a plan: refuse it rather
        // than sleep until then.
        if -late > MAX_START_WAIT_S {
            return Err(Failure::Usage(format!(
                "--start-at {at} is {} s from now, more than the {MAX_START_WAIT_S} s a shard waits: render the manifests again (deploy/k8s/render) or give a nearer time",
                -late
            )));
        }
    }
    let run_id = match (&t.run_id, t.start_at) {
        (Some(id), _) => id.clone(),
        (None, Some(at)) => format!("{}-{at}", arm.name),
        (None, None) if shard.is_whole() => format!(
            "{}-{}-{}",
            arm.name,
            std::process::id(),
            crate::matrix::unix_now()
        ),
        (None, None) => {
            return Err(Failure::Usage(format!(
                "--shard {shard}: the shards of one run need one id: give every shard the same --run-id (or --start-at)"
            )))
        }
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let suffix = if shard.is_whole() {
            String::new()
        } else {
            format!("-shard{}of{}", shard.index, shard.count)
        };
        PathBuf::from("target/incident-lab")
            .join(format!("{}-{}-target{suffix}", scenario.name, arm.name))
    });
    let target = crate::matrix::target::Target {
        base: t.target.clone().unwrap_or_default(),
        secrets,
        admin_token: t.admin_token.clone(),
        database_url: t.database_url.clone(),
        shard,
        run_id,
        start_at: t.start_at,
    };
    println!(
        "arm {} against {} (shard {shard}, run id {})",
        arm.name, target.base, target.run_id
    );
    let running = or_stop(crate::matrix::target::run(
        &scenario, &text, &arm, &target, &out,
    ))
    .await;
    if running.is_err() {
        // Stopped mid-load: the generator's users stop too.
        loadgen::stop();
    }
    let (recorded, judged) = running?.map_err(Failure::Infrastructure)?;
    let Some(judged) = judged else {
        println!(
            "shard {shard}: {} requests sent; recording in {}; merge every shard with: incident-lab merge DIR…",
            recorded.recording.requests(),
            out.join(crate::matrix::target::SHARD_FILE).display()
        );
        return Ok(());
    };
    let mut report = crate::matrix::target::report(
        &scenario,
        judged,
        t.database_url.is_some(),
        started.elapsed(),
    );
    report.command = Some(format!(
        "run {} --arm {} --target {}",
        args.scenario.display(),
        arm.name,
        target.base
    ));
    judged_report(report, &out)
}

/// `merge`: the shards of one run, judged as one.
async fn merge(args: MergeArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let shards = crate::matrix::target::read_shards(&args.shards).map_err(Failure::Usage)?;
    let first = &shards[0];
    let scenario = crate::scenario::Scenario::parse(&first.scenario_file, &first.scenario_text)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let arm = scenario
        .arms
        .iter()
        .find(|a| a.name == first.arm)
        .cloned()
        .ok_or_else(|| {
            unknown_arm(
                std::path::Path::new(&first.scenario_file),
                &scenario,
                &first.arm,
            )
        })?;
    let secrets = match &args.target {
        Some(_) => Some(secrets_from_env(false)?.ok_or_else(|| {
            Failure::Usage("merge --target drains the queue through cron: it needs CRON_SECRET (and WEBHOOK_SECRET, SESSION_SECRET) in the environment".into())
        })?),
        None => None,
    };
    println!(
        "merging {} shard(s) of run {} (arm {}, scenario {})",
        shards.len(),
        first.run_id,
        arm.name,
        scenario.name
    );
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/incident-lab").join(format!("{}-{}-merged", scenario.name, arm.name))
    });
    let drain = args.target.as_deref().zip(secrets.as_ref());
    let judged = or_stop(crate::matrix::target::merge(
        &scenario,
        &arm,
        &shards,
        drain,
        args.database_url.as_deref(),
    ))
    .await?
    .map_err(Failure::Infrastructure)?;
    let mut report = crate::matrix::target::report(
        &scenario,
        judged,
        args.database_url.is_some(),
        started.elapsed(),
    );
    report.command = Some(format!("merge ({} shards)", shards.len()));
    judged_report(report, &out)
}

/// Writes a one-arm report, prints it, and maps its verdict to the exit code.
fn judged_report(report: crate::report::Report, out: &std::path::Path) -> Result<(), Failure> {
    report.write_all(out).map_err(Failure::Infrastructure)?;
    println!("\n{}", crate::report::markdown::render(&report));
    println!("reports in {}", out.display());
    if report.verdict == crate::report::Verdict::Pass {
        Ok(())
    } else {
        Err(Failure::Expectation(
            "the arm did not show what the scenario says it must (see above)".into(),
        ))
    }
}

/// `up`: one arm's world until Ctrl-C (exit 0 when stopped that way, everything cleaned up).
async fn up(args: UpArgs) -> Result<(), Failure> {
    let path = &args.scenario;
    let scenario =
        crate::scenario::Scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    let arm = match &args.arm {
        Some(name) => scenario.arms.iter().find(|a| &a.name == name),
        None => scenario
            .arms
            .iter()
            .find(|a| a.name == "all-on")
            .or(scenario.arms.first()),
    }
    .ok_or_else(|| unknown_arm(path, &scenario, args.arm.as_deref().unwrap_or("all-on")))?;
    let secrets = secrets_from_env(true)?;
    let service_bin = crate::service_proc::find_binary().map_err(Failure::Infrastructure)?;
    let (server, template) = provision_and_seed(&scenario, &args.backend).await?;
    let options = crate::matrix::stack::StackOptions {
        service_bin: &service_bin,
        listen: args.listen,
        out: &args.out,
        secrets,
        fakes: args.fakes.clone(),
    };
    let result = crate::matrix::stack::up(&scenario, &server, &template, arm, &options).await;
    server.shutdown().await;
    result.map_err(Failure::Infrastructure)?;
    println!("stopped: cleaned up");
    Ok(())
}

/// `matrix` and `run`: load and check the scenario (exit 2), provision and seed (exit 3),
/// run the arms, write the reports, judge (exit 1 when an arm did not show what it must).
async fn matrix(
    command: &str,
    path: &std::path::Path,
    backend: &BackendArgs,
    out: Option<PathBuf>,
    only: Option<Vec<String>>,
    chaos: &ChaosArgs,
    repeat: u32,
) -> Result<(), Failure> {
    let mut scenario =
        crate::scenario::Scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    scenario
        .add_timeline(&chaos.faults, &chaos.flips)
        .map_err(Failure::Usage)?;
    if let Some(names) = &only {
        if let Some(name) = names
            .iter()
            .find(|n| !scenario.arms.iter().any(|a| &a.name == *n))
        {
            return Err(unknown_arm(path, &scenario, name));
        }
    }
    let service_bin = crate::service_proc::find_binary().map_err(Failure::Infrastructure)?;
    let out = out.unwrap_or_else(|| {
        let suffix = match &only {
            Some(names) if names.len() == 1 => format!("-{}", names[0]),
            _ => String::new(),
        };
        PathBuf::from("target/incident-lab").join(format!("{}{suffix}", scenario.name))
    });
    let (server, template) = provision_and_seed(&scenario, backend).await?;
    let mut reports = Vec::new();
    let mut result = Ok(());
    for k in 1..=repeat {
        let options = crate::matrix::RunOptions {
            out: if repeat == 1 {
                out.clone()
            } else {
                println!("\n== repeat {k}/{repeat} ==");
                out.join(format!("repeat-{k}"))
            },
            service_bin: service_bin.clone(),
            only: only.clone(),
            command: match (command, &only) {
                ("run", Some(arms)) => format!("run {} --arm {}", path.display(), arms.join(",")),
                (_, Some(arms)) => {
                    format!("{command} {} --arms {}", path.display(), arms.join(","))
                }
                (_, None) => format!("{command} {}", path.display()),
            },
        };
        // The matrix stops by itself when asked to (the current arm marked interrupted).
        match crate::matrix::run(&scenario, &server, &template, &options).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if crate::interrupt::requested().is_some() {
            break;
        }
    }
    server.shutdown().await;
    result.map_err(Failure::Infrastructure)?;
    if let Some(stop) = crate::interrupt::requested() {
        println!("reports of what ran in {}", out.display());
        return Err(Failure::Interrupted(stop));
    }
    for report in &reports {
        println!("\n{}", crate::report::markdown::render(report));
    }
    if let Some(noise) = crate::compare::noise(&crate::compare::Side {
        reports: reports.clone(),
    }) {
        println!("\n## The noise band across repeats\n\n{noise}");
        std::fs::write(out.join("repeats.md"), &noise).map_err(|e| {
            Failure::Infrastructure(anyhow::anyhow!(
                "cannot write {}: {e}",
                out.join("repeats.md").display()
            ))
        })?;
    }
    println!("reports in {}", out.display());
    let inconclusive: Vec<&str> = reports
        .iter()
        .flat_map(|r| &r.arms)
        .filter(|a| a.status == crate::report::ArmStatus::Inconclusive)
        .map(|a| a.name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if reports
        .iter()
        .all(|r| r.verdict == crate::report::Verdict::Pass)
    {
        Ok(())
    } else if !inconclusive.is_empty() {
        Err(Failure::Expectation(format!(
            "inconclusive: the load generator fell behind in arm(s) {} (see above): no verdict on the service",
            inconclusive.join(", ")
        )))
    } else {
        Err(Failure::Expectation(
            "an arm did not show what the scenario says it must (see above)".into(),
        ))
    }
}
