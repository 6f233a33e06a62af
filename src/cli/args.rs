//! What can be typed: the commands and their arguments (clap derive). What each command does
//! is in the parent module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::Scale;
use crate::postgres::{PgSettings, PostgresChoice, ProvisionRequest, DEFAULT_PG_IMAGE};

/// Reproduce the Phase 53 production incident under load, and prove its fixes.
#[derive(Debug, Parser)]
#[command(name = "incident-lab", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every arm of a scenario (default: the 8 flag combinations + pre-phase-53), judge
    /// each against what it must show, and write report.json/.md/.html and junit.xml.
    Matrix(MatrixArgs),
    /// Run one arm of a scenario (same outputs as matrix, one arm); with --target, against a
    /// service that is already running, optionally as one shard of many (--shard I/N).
    Run(RunArgs),
    /// Merge the recordings of the shards of one run (`run --target … --shard I/N --out DIR`)
    /// into one report, judged as a single run would be. Refuses shards of different runs and
    /// a run with a shard missing.
    Merge(MergeArgs),
    /// Bring up one arm's world — Postgres (seeded), the fake providers, the service with the
    /// arm's switches — and keep it up until Ctrl-C, for a browser, curl, k6 or oha. Prints the
    /// URLs, the secrets, a signed webhook and a session cookie; flags flip live via
    /// /admin/flags. The secrets are fresh, or WEBHOOK_SECRET, CRON_SECRET, SESSION_SECRET and
    /// ADMIN_TOKEN from the environment when all are set.
    Up(UpArgs),
    /// Serve the fake providers (GHL, Unipile, the AI model) alone, with a scenario's knobs,
    /// until Ctrl-C — for a stack whose parts run apart (`up --fakes URL`, docker-compose).
    Fakes(FakesArgs),
    /// Measure the harness's own ceilings against references run in the same command: the
    /// load generator's highest on-schedule open-model rate against a trivial endpoint, beside
    /// wrk on the same endpoint; the service's EMAIL_SENT ingest and job drain on Postgres,
    /// beside pgbench on the same cluster. Writes ceiling.json and ceiling.md.
    Ceiling(CeilingArgs),
    /// Print a generated block of docs/replay.md from the stored run it shows
    /// (`scripts/readme-render`): triage EXPORT, replay-fidelity FIDELITY.json,
    /// calibrate-fit FIT.json, recovery RECOVERY.json...
    #[command(hide = true)]
    DocBlock {
        name: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// A trivial HTTP server (200 "ok" on every path) for `ceiling`; prints `listening on ADDR`.
    #[command(hide = true)]
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Serve over TLS with this certificate (PEM; with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Compare a run with a baseline (each a report.json or a directory of repeats); exit 1 on a
    /// p95 regression: beyond the allowance and the floor (or across the budget), and
    /// significant across the per-second p95s. Prints each change with its noise band.
    Compare(CompareArgs),
    /// Print a report.json as Markdown: the whole report.md, or (--summary) the results table
    /// with the commit and machine it was measured on, as the README shows it; or (--html)
    /// write its HTML page, and (--screenshot) open that in headless Chromium to check it and
    /// take its picture.
    Report(ReportArgs),
    /// Work with the seeded incident database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Make scenarios (from a production log export).
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Print the prioritized fix list of a production log export: error signatures grouped
    /// into categories (db_timeout, db_pool_wait, expected_unauth, ai_timeout, …), counted per
    /// endpoint, ranked P0 → P2 (Markdown on stdout; --out DIR writes triage.md and
    /// triage.json).
    Triage(TriageArgs),
    /// Replay a production log export against the reference service: writes the scenario
    /// (`scenario from-logs`), runs its arms with arrivals on the recorded timeline, and puts
    /// production's figures beside each arm's per endpoint and minute (fidelity.md/.json).
    /// Exit 1 when the legacy arm does not reproduce production or the fixed arm does not
    /// remove it.
    Replay(ReplayArgs),
    /// Fit the legacy world to a log export: probes the legacy arm on the recorded arrivals
    /// while a pattern search turns the knobs the export cannot say (pool size, the function
    /// limit and statement timeout as scaled, the providers' latency) until, per endpoint and
    /// recorded minute with ≥ 20 requests, its failed share is within ±25 % (±3 points under
    /// 10 %) and its p95 (share of the limit) within 1.5× of production's; then runs every arm
    /// on the calibrated world. Writes scenario.toml, fit.md/.json, fidelity.md/.json. Exit 1
    /// when a fitted cell stays outside or the fixed arm does not remove the failures.
    Calibrate(CalibrateArgs),
    /// Chaos: the faults a scenario's `[[faults]]` (or `--fault`) can inject, and flag flips.
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Log exports made here.
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Run the reference service (inbox-service) with its configuration from the environment
    /// (DATABASE_URL, BIND, secrets, provider URLs, limits, switches; see service/README.md). The
    /// matrix starts one per arm this way; JSON logs on stderr.
    Service,
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Describe the fault kinds and their parameters.
    List,
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Write a service's access log (`matrix --access-log`: OUT/arm-NAME.access.jsonl) as a
    /// production log export — Vercel's runtime-log CSV, newest row first — with its time
    /// stretched --slower F× (gaps between starts and every duration), so a world run here
    /// with known knobs reads as a slower production whose parameters `calibrate` must recover.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The access log (JSON lines, as the service writes them).
    pub access_log: PathBuf,
    /// Stretch time by this factor (> 0; 1 keeps the run's own clock).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub slower: f64,
    /// The CSV file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Write a scenario that replays a log export: per endpoint of the reference service, the
    /// requests that arrived each second of the window (time scaled by --speed, thinned to
    /// keep production's arrival rate unless --arrivals all),
    /// plus an [observed] section with production's p50/p95 and status mix per minute.
    /// Everything else (dataset, limits, budgets, arms) comes from --base.
    FromLogs(FromLogsArgs),
}

/// How to read a log export (shared by from-logs, triage and replay).
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Vercel runtime-logs CSV export (columns by header name), or JSON lines from a log
    /// drain (.jsonl/.ndjson, or a file starting with `{`).
    pub logs: PathBuf,
    /// Only requests starting in START..END: HH:MM[:SS] (UTC, on the export's first day) or
    /// full times (2026-01-23T17:58:00Z); either side may be left out.
    #[arg(long, value_name = "START..END", value_parser = parse_window)]
    pub window: Option<crate::logs::WindowSpec>,
    /// Extra path rules, ahead of the defaults: TOML `[[map]]` entries with `path` (exact, or
    /// a prefix ending in `*`), optional `method`, and `endpoint` (webhook, inbox_page,
    /// inbox_counts, ai_draft, cron_background_jobs, cron_followups; `event` for webhooks) or
    /// `ignore = true`.
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// Stop at the first malformed row (exit 2) instead of counting and listing them.
    #[arg(long)]
    pub strict: bool,
}

/// How a replay is built from an export.
#[derive(Debug, Clone, Args)]
pub struct ReplayShape {
    /// Recorded seconds per replayed second: 30 plays 30 minutes in 1 (same requests, 30x
    /// the rate). Speeds dividing 60 keep recorded minutes on whole seconds of the run.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// What a speed above 1 does to the load: `thin` sends 1 in SPEED of the recorded
    /// requests (evenly, per endpoint), so the world sees production's arrival rate and
    /// only the run is shorter; `all` sends every one, at SPEED times production's rate (a
    /// stress, another regime than production's). The report says which.
    #[arg(long, value_enum, default_value_t = crate::logs::to_scenario::Arrivals::Thin)]
    pub arrivals: crate::logs::to_scenario::Arrivals,
    /// The scenario the world comes from: dataset, Postgres and service limits, providers,
    /// budgets, arms.
    #[arg(
        long,
        value_name = "SCENARIO",
        default_value = "scenarios/incident.toml"
    )]
    pub base: PathBuf,
    /// The platform's function limit in production (504 after it); latencies compare as a
    /// share of it against the service's request timeout.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub function_limit: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct FromLogsArgs {
    #[command(flatten)]
    pub logs: LogsArgs,
    #[command(flatten)]
    pub shape: ReplayShape,
    /// The scenario file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct TriageArgs {
    #[command(flatten)]
    pub logs: LogsArgs,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Also write triage.md and triage.json here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub logs: LogsArgs,
    #[command(flatten)]
    pub shape: ReplayShape,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Only these arms, comma-separated (default: every arm of --base).
    #[arg(long, value_delimiter = ',')]
    pub arms: Option<Vec<String>>,
    /// How far a legacy arm's failed share and p95 (as a share of its limit) may be from
    /// production's and still count as reproduced.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Output folder (default: target/incident-lab/replay-LOGS-NAME): scenario.toml, the
    /// matrix's reports, fidelity.md and fidelity.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub logs: LogsArgs,
    /// The scenario the world comes from (dataset, limits, providers, budgets, arms); its
    /// service and provider settings are where the search starts.
    #[arg(
        long,
        value_name = "SCENARIO",
        default_value = "scenarios/incident.toml"
    )]
    pub base: PathBuf,
    /// Recorded seconds per replayed second. Every recorded request is sent (at this many
    /// times production's rate): the knobs found scale the world to it.
    #[arg(long, default_value_t = 30.0)]
    pub speed: f64,
    /// The platform's function limit in production.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg)]
    pub function_limit: std::time::Duration,
    /// Time for the search's probes; the search stops at the first probe that would end past
    /// it (the base is always probed), then the arms run once on the calibrated world.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration_arg)]
    pub budget: std::time::Duration,
    /// Fit on the first N recorded minutes, and report the rest as held out (default: the
    /// first three quarters).
    #[arg(long, value_name = "N")]
    pub fit_minutes: Option<u32>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Output folder (default: target/incident-lab/calibrate-LOGS-NAME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn parse_window(s: &str) -> Result<crate::logs::WindowSpec, String> {
    s.parse()
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The report.json to render.
    pub report: PathBuf,
    /// Only the results table, with the commit and machine.
    #[arg(long, conflicts_with = "html")]
    pub summary: bool,
    /// Write the report's HTML page to FILE (rendered by this build) instead of printing the
    /// markdown.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Open the HTML page in headless Chromium (`INCIDENT_LAB_CHROMIUM`, else `chromium` on
    /// PATH; Debian's `chromium` package) and write a PNG of it. Fails (exit 1) if the page logs
    /// a console error or requests anything beyond itself.
    #[arg(long, value_name = "PNG", requires = "html")]
    pub screenshot: Option<PathBuf>,
    /// Keep only the top PX CSS pixels of the page in the PNG (default: the whole page).
    #[arg(long, value_name = "PX", requires = "screenshot")]
    pub screenshot_height: Option<u32>,
}

/// Where Postgres comes from (the scenario says how it is constrained).
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// auto | local | docker | postgres://USER:PASS@HOST:PORT/DB. `auto` takes DATABASE_URL if
    /// set, else Docker if a daemon answers and the image is present, else a local cluster.
    #[arg(long, env = "INCIDENT_LAB_POSTGRES", default_value = "auto", value_parser = parse_choice)]
    pub postgres: PostgresChoice,
    /// Directory with initdb and postgres for the local backend (default: PATH, then
    /// /usr/lib/postgresql/*/bin).
    #[arg(long, env = "INCIDENT_LAB_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Image for the docker backend; on an offline machine use a locally built one.
    #[arg(long, env = "INCIDENT_LAB_PG_IMAGE", default_value = DEFAULT_PG_IMAGE, value_name = "NAME:TAG")]
    pub pg_image: String,
}

impl BackendArgs {
    /// The provisioning request: this backend, constrained by `settings`.
    pub fn request(&self, settings: PgSettings) -> ProvisionRequest {
        ProvisionRequest {
            choice: self.postgres.clone(),
            pg_bin: self.pg_bin.clone(),
            pg_image: self.pg_image.clone(),
            settings,
        }
    }
}

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// The scenario file, e.g. scenarios/incident.toml.
    pub scenario: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Output folder (default: target/incident-lab/SCENARIO-NAME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Only these arms, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub arms: Option<Vec<String>>,
    /// Run the whole matrix N times on the same Postgres (one provisioning, one seed), into
    /// OUT/repeat-1 … OUT/repeat-N, and print the noise band (each repeat's p95, their
    /// spread; also OUT/repeats.md). Passes only when every repeat passes. `compare` takes OUT
    /// as a directory of repeats.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    #[command(flatten)]
    pub chaos: ChaosArgs,
}

/// Faults and flips added to the scenario's own on the command line.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Chaos")]
pub struct ChaosArgs {
    /// A fault on the load's timeline, as a `[[faults]]` entry's fields:
    /// `at=5s,for=8s,kind=latency,latency=40ms`; `kind=provider,provider=ghl,
    /// knobs.errors.server_error_pct=50`. Repeatable. `incident-lab chaos list` names the kinds.
    #[arg(long = "fault", value_name = "FIELDS")]
    pub faults: Vec<String>,
    /// A flag flip on the load's timeline, as a `[[flips]]` entry's fields:
    /// `at=10s,flag=INBOXXIA_EMAIL_SENT_ASYNC,to=true`. Repeatable.
    #[arg(long = "flip", value_name = "FIELDS")]
    pub flips: Vec<String>,
    /// Have each arm's service write an access log, OUT/arm-NAME.access.jsonl: one JSON line
    /// per request (end time, method, path, status, duration), as a platform's log drain holds.
    /// `logs export` turns one into a production-style export (e.g. to check that `calibrate`
    /// recovers the knobs of a world it did not see).
    #[arg(long, help_heading = "Output")]
    pub access_log: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The arm to run.
    #[arg(long)]
    pub arm: String,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Output folder (default: target/incident-lab/SCENARIO-NAME-ARM).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub chaos: ChaosArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// A run against a service the harness did not start.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Against a running service")]
pub struct TargetArgs {
    /// Send the load to this running service (staging, the compose stack, a Kubernetes
    /// Service) instead of starting one. Webhooks and sessions are signed with the service's
    /// WEBHOOK_SECRET and SESSION_SECRET, cron is called with its CRON_SECRET, all read from
    /// the environment (`incident-lab up` prints them).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Set the arm's switches through PUT /admin/flags before the load (else the run is judged
    /// as the arm, and says it did not set them).
    #[arg(
        long,
        env = "ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// The service's database: read after the drain to check that every acknowledged
    /// EMAIL_SENT was applied exactly once (else that check is named as skipped).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Send only the I-th of N shards of the schedule (0-based: every N-th arrival of every
    /// stream); write its recording for `incident-lab merge`.
    #[arg(long, env = "INCIDENT_LAB_SHARD", value_name = "I/N")]
    pub shard: Option<loadgen::Shard>,
    /// The run's id, the same in every shard (the event ids are built from it). Default: the
    /// arm and --start-at, or the arm, the process and the time for an unsharded run.
    #[arg(long, env = "INCIDENT_LAB_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Start the load at this Unix time (seconds), so shards on many machines start together.
    #[arg(long, env = "INCIDENT_LAB_START_AT", value_name = "UNIX_SECONDS")]
    pub start_at: Option<i64>,
    /// Send to a target that is not loopback without asking. The plan (host, endpoints, peak
    /// rates, totals, duration) is printed first either way; without --yes a terminal is asked,
    /// and with no terminal nothing is sent (exit 2).
    #[arg(long)]
    pub yes: bool,
    /// The most requests per second the run may plan, every stream at its peak together
    /// (duplicates and redeliveries counted): a scenario that plans more is refused before
    /// anything is sent (exit 2).
    #[arg(long, value_name = "PER_SECOND")]
    pub max_rate: Option<f64>,
    /// An https:// target's private CA (PEM), trusted beside the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Accept any certificate from an https:// target (a self-signed staging host): the
    /// report says its certificate was not verified.
    #[arg(long)]
    pub insecure: bool,
}

impl TargetArgs {
    /// The flag given that only a run with --target takes, if any (read from the command line,
    /// so an ADMIN_TOKEN left in the environment does not count).
    pub fn needs_target(&self) -> Option<&'static str> {
        if self.database_url.is_some() {
            Some("--database-url")
        } else if self.shard.is_some() {
            Some("--shard")
        } else if self.start_at.is_some() {
            Some("--start-at")
        } else if self.ca_cert.is_some() {
            Some("--ca-cert")
        } else if self.insecure {
            Some("--insecure")
        } else if self.yes {
            Some("--yes")
        } else if self.max_rate.is_some() {
            Some("--max-rate")
        } else if self.run_id.is_some() {
            Some("--run-id")
        } else {
            None
        }
    }
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' output folders (or their shard.json files), every shard of the run once.
    #[arg(required = true, value_name = "DIR")]
    pub shards: Vec<PathBuf>,
    /// Output folder of the merged report (default: target/incident-lab/SCENARIO-ARM-merged).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Tick the target's background-jobs cron until its queue is empty before reading the
    /// database (CRON_SECRET from the environment).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The service's database: check every acknowledged EMAIL_SENT of every shard applied
    /// exactly once.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The scenario file: its dataset, Postgres constraints, service limits and providers.
    pub scenario: PathBuf,
    /// The arm whose switches the service starts with (default: all-on, else the first arm).
    #[arg(long)]
    pub arm: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Where the service listens (port 0: any free one, printed). In a container, 0.0.0.0:PORT.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Where the service log goes (default: target/incident-lab/up).
    #[arg(long, value_name = "DIR", default_value = "target/incident-lab/up")]
    pub out: PathBuf,
    /// Use fake providers already running at this URL (`incident-lab fakes`) instead of
    /// starting them; up tells them which workspaces are disconnected.
    #[arg(long, value_name = "URL")]
    pub fakes: Option<String>,
}

#[derive(Debug, Args)]
pub struct FakesArgs {
    /// The scenario whose [providers] knobs (latency, error mix, truncation) they start with.
    pub scenario: PathBuf,
    /// Where they listen (port 0: any free one, printed). In a container, 0.0.0.0:PORT.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// Open-model rates to step through, ascending (requests per second); the ramp stops at
    /// the first step that does not hold (then --refine narrows the gap below it).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,8000,16000,24000,32000,48000,64000,96000,128000"
    )]
    pub rates: Vec<f64>,
    /// How long each step, and wrk, runs.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    pub step: std::time::Duration,
    /// A step holds when the sends' lateness p99 is at most this (and nothing failed).
    #[arg(long, default_value = "5ms", value_parser = parse_duration_arg)]
    pub max_lateness: std::time::Duration,
    /// Connections: the generator's users, and wrk's.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// After the first step that does not hold, this many more steps, each halfway between the
    /// highest rate that held and the lowest that did not: the ceiling is then known to within
    /// that gap ÷ 2^N (0: the stepped rates only). For the generator's ramp and the ingest's.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub refine: u32,
    /// Where ceiling.json and ceiling.md go.
    #[arg(long, default_value = "target/incident-lab/ceiling")]
    pub out: PathBuf,
    /// EMAIL_SENT rates for the ingest ramp on Postgres, ascending (requests per second).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,400,800,1600,3200,6400,12800,25600"
    )]
    pub ingest_rates: Vec<f64>,
    /// The scenario whose dataset, Postgres settings, service limits and all-on arm the
    /// ingest and drain run with.
    #[arg(long, default_value = "scenarios/smoke.toml")]
    pub scenario: PathBuf,
    /// Measure the load generator only: no Postgres, no ingest, drain or pgbench.
    #[arg(long)]
    pub no_database: bool,
    /// Also measure the generator and wrk over HTTPS (HTTP/1.1 over TLS, the endpoint's
    /// certificate made with openssl for the run and trusted as --ca-cert trusts one), and say
    /// what TLS costs each of them a request.
    #[arg(long)]
    pub https: bool,
    /// Also run the memory soak: the generator at --soak-rate for this long (e.g. 10m), its
    /// RSS read every second; growth after the warm-up (the first tenth) must stay < 10 %.
    #[arg(long, value_parser = parse_duration_arg, value_name = "DURATION")]
    pub soak: Option<std::time::Duration>,
    /// The soak's rate (requests per second).
    #[arg(long, default_value_t = 1000.0)]
    pub soak_rate: f64,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline: a report.json, or a directory of repeats (every report.json under it).
    pub base: PathBuf,
    /// The new run: a report.json, or a directory of repeats.
    pub new: PathBuf,
    /// Largest allowed p95 increase per arm and endpoint relative to the baseline, e.g. 10%.
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    pub max_regression: f64,
    /// Smallest p95 increase that can count, whatever its ratio (e.g. 50ms).
    #[arg(long, default_value = "50ms", value_parser = parse_duration_arg)]
    pub min_delta: std::time::Duration,
    /// Smallest p95 increase that can count on a budgeted endpoint, as a share of its budget.
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    pub budget_share: f64,
    /// Significance level of the one-sided test on paired per-second p95s (a block bootstrap
    /// over the repeats and their seconds).
    #[arg(long, default_value_t = 0.01)]
    pub alpha: f64,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| v / 100.0)
        .ok_or_else(|| format!("{s:?} is not a percentage like 10%"))
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Provision Postgres, migrate, seed, print the connection URL, and stay up until Ctrl-C;
    /// then tear everything down.
    Up(DbUpArgs),
}

/// Where Postgres comes from and how it is constrained (`db up`).
#[derive(Debug, Clone, Args)]
pub struct PostgresArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub settings: PgSettings,
}

fn parse_choice(s: &str) -> Result<PostgresChoice, String> {
    s.parse()
}

impl PostgresArgs {
    /// The provisioning request these arguments describe.
    pub fn request(&self) -> ProvisionRequest {
        self.backend.request(self.settings.clone())
    }
}

/// How much data to seed.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Preset: smoke (20 workspaces, 40k messages) or default (200 workspaces, 2M messages).
    #[arg(long, default_value = "default")]
    pub scale: Scale,
    /// Override the preset's workspace count.
    #[arg(long)]
    pub workspaces: Option<u32>,
    /// Override the preset's lead count.
    #[arg(long)]
    pub leads: Option<u32>,
    /// Override the preset's message count.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Seed for the deterministic data generator.
    #[arg(long, default_value_t = 53)]
    pub seed: i64,
}

impl ScaleArgs {
    /// The preset with any overrides applied.
    pub fn scale(&self) -> Scale {
        Scale {
            workspaces: self.workspaces.unwrap_or(self.scale.workspaces),
            leads: self.leads.unwrap_or(self.scale.leads),
            messages: self.messages.unwrap_or(self.scale.messages),
            ..self.scale
        }
    }
}

#[derive(Debug, Args)]
pub struct DbUpArgs {
    #[command(flatten)]
    pub postgres: PostgresArgs,
    #[command(flatten)]
    pub scale: ScaleArgs,
}
