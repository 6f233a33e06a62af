//! `scenario from-logs`, `triage` and `replay`: what the harness does with a production log
//! export.

use std::path::{Path, PathBuf};

use super::Failure;
use super::{ExportArgs, FromLogsArgs, LogsArgs, ReplayArgs, ReplayShape, TriageArgs};
use crate::logs::{self, Summary};

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

/// Reads and sums up the export, saying on stderr what it read and what it could not.
pub(super) fn summarize(args: &LogsArgs) -> Result<Summary, Failure> {
    let map = match &args.map {
        Some(file) => logs::PathMap::with_file(file).map_err(usage)?,
        None => logs::PathMap::defaults(),
    };
    eprintln!("reading {} …", args.logs.display());
    let started = std::time::Instant::now();
    let summary =
        logs::summarize(&args.logs, &map, args.window.as_ref(), args.strict).map_err(usage)?;
    let s = &summary;
    let memory = peak_memory_mib().map_or(String::new(), |m| format!(", peak memory {m} MiB"));
    eprintln!(
        "{}: {} rows ({}) in {:.1} s{memory}: {} requests in the window, {} outside it, {} log lines of no request",
        args.logs.display(),
        s.read.rows,
        s.read.format,
        started.elapsed().as_secs_f64(),
        s.requests,
        s.outside_window,
        s.pathless_rows
    );
    if s.read.malformed > 0 {
        let lines: Vec<String> = s
            .read
            .malformed_rows
            .iter()
            .map(|m| format!("  line {}: {}", m.line, m.reason))
            .collect();
        eprintln!(
            "{} malformed rows left out (--strict makes them fatal){}:\n{}",
            s.read.malformed,
            if s.read.malformed > s.read.malformed_rows.len() as u64 {
                format!(", the first {} listed", s.read.malformed_rows.len())
            } else {
                String::new()
            },
            lines.join("\n")
        );
    }
    for (what, paths) in [
        (
            "unmatched (not replayed; map them with --map FILE)",
            &s.unmatched,
        ),
        ("ignored by a rule", &s.ignored),
    ] {
        if !paths.is_empty() {
            let list: Vec<String> = paths.iter().map(|(p, n)| format!("  {p}: {n}")).collect();
            eprintln!("requests {what}:\n{}", list.join("\n"));
        }
    }
    Ok(summary)
}

/// This process's peak resident memory (Linux's VmHWM), to show that reading does not grow
/// with the export.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.div_ceil(1024))
}

fn scenario_text(summary: &Summary, shape: &ReplayShape) -> Result<String, Failure> {
    let base = std::fs::read_to_string(&shape.base).map_err(|e| {
        usage(format!(
            "{}: cannot read the base scenario: {e}",
            shape.base.display()
        ))
    })?;
    // The base must be a valid scenario itself: its errors are named against its own file.
    crate::model::Scenario::load(&shape.base).map_err(usage)?;
    let command: Vec<String> = std::env::args().collect();
    logs::to_scenario::scenario_text(
        summary,
        &base,
        &shape.base.display().to_string(),
        &logs::to_scenario::Options {
            speed: shape.speed,
            arrivals: shape.arrivals,
            function_limit: shape.function_limit,
            command: command.join(" "),
        },
    )
    .map_err(usage)
}

/// Writes `text` to `path` and loads it back as a scenario (what a run will do with it).
pub(super) fn write_scenario(path: &Path, text: &str) -> Result<crate::model::Scenario, Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| usage(format!("{}: cannot create: {e}", dir.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))?;
    crate::model::Scenario::load(path).map_err(|e| {
        Failure::Usage(format!(
            "the scenario written to {} does not load (a bug of from-logs): {e}",
            path.display()
        ))
    })
}

pub(super) fn describe(scenario: &crate::model::Scenario) {
    for st in &scenario.streams {
        let n: u64 = match &st.arrival {
            loadgen::Arrival::Counts { counts, .. } => counts.iter().map(|&c| u64::from(c)).sum(),
            _ => 0,
        };
        println!("  {:<48} {n:>7} requests", st.name);
    }
    let phases: Vec<String> = scenario
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {:.1}–{:.1} s",
                p.name,
                p.from.as_secs_f64(),
                p.to.as_secs_f64()
            )
        })
        .collect();
    println!(
        "  {:.1} s of load; phases: {}",
        scenario.duration.as_secs_f64(),
        phases.join(", ")
    );
}

/// `scenario from-logs`.
pub(super) fn from_logs(args: &FromLogsArgs) -> Result<(), Failure> {
    let summary = summarize(&args.logs)?;
    let text = scenario_text(&summary, &args.shape)?;
    let scenario = write_scenario(&args.out, &text)?;
    println!("wrote {} ({})", args.out.display(), scenario.description);
    describe(&scenario);
    Ok(())
}

/// `triage`.
pub(super) fn triage(args: &TriageArgs) -> Result<(), Failure> {
    let summary = summarize(&args.logs)?;
    let t = logs::triage::triage(&summary);
    let md = logs::triage::markdown(&t);
    let json = serde_json::to_string_pretty(&t).map_err(|e| Failure::Infrastructure(e.into()))?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| usage(format!("{}: cannot create: {e}", dir.display())))?;
        for (name, body) in [("triage.md", &md), ("triage.json", &json)] {
            let path = dir.join(name);
            std::fs::write(&path, body)
                .map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))?;
        }
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{md}");
    }
    Ok(())
}

/// `target/incident-lab/COMMAND-EXPORT` (the export's file name without its extension).
pub(super) fn default_out(command: &str, export: &Path) -> PathBuf {
    let stem = export
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("logs");
    PathBuf::from("target/incident-lab").join(format!("{command}-{stem}"))
}

/// `replay`.
pub(super) async fn replay(args: ReplayArgs) -> Result<(), Failure> {
    if !(args.factor.is_finite() && args.factor >= 1.0) {
        return Err(usage(format!("--factor {} must be 1 or more", args.factor)));
    }
    let summary = summarize(&args.logs)?;
    let text = scenario_text(&summary, &args.shape)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out("replay", &args.logs.logs));
    let path = out.join("scenario.toml");
    let scenario = write_scenario(&path, &text)?;
    println!(
        "replaying {} as {}:",
        args.logs.logs.display(),
        path.display()
    );
    describe(&scenario);
    let observed = scenario
        .observed
        .clone()
        .expect("from-logs writes [observed]");
    let ran = super::matrix(
        "replay",
        &path,
        &args.backend,
        Some(out.clone()),
        args.arms.clone(),
        &super::ChaosArgs::default(),
        1,
    )
    .await;
    if matches!(
        ran,
        Err(Failure::Interrupted(_) | Failure::Infrastructure(_) | Failure::Usage(_))
    ) {
        return ran;
    }
    let report_path = out.join("report.json");
    let report = crate::report::Report::read(&report_path).map_err(|e| {
        Failure::Infrastructure(e.context("the replay wrote no readable report.json"))
    })?;
    let timeout_ms = scenario.service.request_timeout.as_secs_f64() * 1000.0;
    let fidelity = logs::fidelity::compare(&report, &observed, timeout_ms, args.factor);
    let json =
        serde_json::to_string_pretty(&fidelity).map_err(|e| Failure::Infrastructure(e.into()))?;
    for (name, body) in [
        ("fidelity.md", &fidelity.markdown),
        ("fidelity.json", &json),
    ] {
        let p = out.join(name);
        std::fs::write(&p, body)
            .map_err(|e| usage(format!("{}: cannot write: {e}", p.display())))?;
    }
    println!("\n{}", fidelity.markdown);
    println!("fidelity table in {}", out.join("fidelity.md").display());
    ran?;
    if fidelity.passed {
        Ok(())
    } else {
        let failed: Vec<String> = fidelity
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{} on {}: {} ({})", c.arm, c.endpoint, c.question, c.detail))
            .collect();
        Err(Failure::Expectation(format!(
            "the replay does not match production: {}",
            failed.join("; ")
        )))
    }
}

/// `logs export`: an access log written as a production export, time stretched.
pub(super) fn export(args: &ExportArgs) -> Result<(), Failure> {
    if !(args.slower.is_finite() && args.slower > 0.0) {
        return Err(usage(format!(
            "--slower {}: expected a positive factor (1 keeps the run's clock)",
            args.slower
        )));
    }
    let mut rows = Vec::new();
    let read = logs::read::read(&args.access_log, true, |r| rows.push(r)).map_err(usage)?;
    if rows.is_empty() {
        return Err(usage(format!(
            "{}: no requests in it (an arm run with --access-log writes one line per request)",
            args.access_log.display()
        )));
    }
    let write = |e: std::io::Error| {
        Failure::Infrastructure(anyhow::anyhow!("{}: cannot write: {e}", args.out.display()))
    };
    let file = std::fs::File::create(&args.out).map_err(write)?;
    let mut out = std::io::BufWriter::new(file);
    let done = logs::export::export(rows, args.slower, &mut out).map_err(write)?;
    std::io::Write::flush(&mut out).map_err(write)?;
    let span_s = (done.last_ms - done.first_ms) as f64 / 1000.0;
    eprintln!(
        "{}: {} requests from {} ({} lines, {}), time ×{}: {span_s:.0} s from the first start to the last end",
        args.out.display(),
        done.rows,
        args.access_log.display(),
        read.rows,
        read.format,
        args.slower
    );
    if done.skipped > 0 {
        eprintln!(
            "{} lines without a path or a duration left out",
            done.skipped
        );
    }
    Ok(())
}
