//! `calibrate`: the probes of [`crate::logs::calibrate`]'s search, run on one seeded
//! database, then every arm on the calibrated world.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::logs::{default_out, describe, summarize, write_scenario};
use super::{CalibrateArgs, Failure};
use crate::logs::calibrate::{self as fit, Loss, Probe, Setting};
use crate::logs::to_scenario::{Arrivals, Options};
use crate::model::{Expect, Scenario};

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

fn write(path: &Path, body: &str) -> Result<(), Failure> {
    std::fs::write(path, body).map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))
}

/// `calibrate`.
pub(super) async fn calibrate(args: CalibrateArgs) -> Result<(), Failure> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(usage(format!("--speed {} must be more than 0", args.speed)));
    }
    let summary = summarize(&args.logs)?;
    let base_text = std::fs::read_to_string(&args.base).map_err(|e| {
        usage(format!(
            "{}: cannot read the base scenario: {e}",
            args.base.display()
        ))
    })?;
    Scenario::load(&args.base).map_err(usage)?;
    let command: Vec<String> = std::env::args().collect();
    let replay_text = crate::logs::to_scenario::scenario_text(
        &summary,
        &base_text,
        &args.base.display().to_string(),
        &Options {
            speed: args.speed,
            arrivals: Arrivals::All,
            function_limit: args.function_limit,
            command: command.join(" "),
        },
    )
    .map_err(usage)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out("calibrate", &args.logs.logs));
    let replay = write_scenario(&out.join("replay.toml"), &replay_text)?;
    let observed = replay
        .observed
        .clone()
        .expect("from-logs writes [observed]");
    let Some(legacy) = replay.arms.iter().find(|a| a.expect == Expect::Incident) else {
        return Err(usage(format!(
            "{}: no arm expects the incident (expect = \"incident\"): nothing to fit",
            args.base.display()
        )));
    };
    let legacy = legacy.name.clone();
    let minutes = observed.minutes();
    let fit_minutes = args
        .fit_minutes
        .unwrap_or_else(|| (f64::from(minutes) * 0.75).ceil() as u32)
        .min(minutes);
    println!(
        "calibrating {} on the legacy arm `{legacy}`: {minutes} recorded minutes at {}x (every request), fit on minutes 0..{fit_minutes}, the rest held out; budget {:.0} s",
        args.logs.logs.display(),
        args.speed,
        args.budget.as_secs_f64()
    );
    describe(&replay);

    let (server, template) = super::provision_and_seed(&replay, &args.backend).await?;
    let service_bin = crate::service_proc::find_binary().map_err(Failure::Infrastructure)?;
    let run = async |scenario: &Scenario, dir: PathBuf, only: Option<Vec<String>>| {
        crate::matrix::run(
            scenario,
            &server,
            &template,
            &crate::matrix::RunOptions {
                out: dir,
                service_bin: service_bin.clone(),
                only,
                command: format!("calibrate {}", args.logs.logs.display()),
            },
        )
        .await
    };

    let base = fit::base_setting(&replay);
    let knobs = fit::knobs(&base);
    let started = Instant::now();
    let mut probes: Vec<Probe> = Vec::new();
    let mut failure: Option<Failure> = None;
    let best = fit::search(&knobs, base, async |setting: Setting| {
        let spent = started.elapsed().as_secs_f64();
        let longest = probes.iter().map(|p| p.seconds).fold(0.0, f64::max);
        if !probes.is_empty() && spent + longest > args.budget.as_secs_f64() {
            return None;
        }
        if crate::interrupt::requested().is_some() {
            return None;
        }
        let n = probes.len() + 1;
        let dir = out.join("probes").join(format!("{n:02}"));
        let scenario = match setting
            .apply(&replay_text)
            .map_err(usage)
            .and_then(|t| write_scenario(&dir.join("scenario.toml"), &t))
        {
            Ok(s) => s,
            Err(e) => {
                failure = Some(e);
                return None;
            }
        };
        eprintln!("probe {n} ({spent:.0} s in): {}", setting.said());
        let t = Instant::now();
        let report = match run(&scenario, dir, Some(vec![legacy.clone()])).await {
            Ok(r) => r,
            Err(e) => {
                failure = Some(Failure::Infrastructure(e));
                return None;
            }
        };
        let arm = report.arms.first()?;
        let residuals = fit::residuals(arm, &observed, setting.request_timeout_ms, fit_minutes);
        let loss = Loss::of(&residuals);
        let seconds = t.elapsed().as_secs_f64();
        eprintln!(
            "probe {n}: {} of {} fitted cells outside, squared error {:.1} ({seconds:.0} s)",
            loss.outside, loss.cells, loss.squares
        );
        probes.push(Probe {
            setting,
            loss,
            seconds,
        });
        Some(loss)
    })
    .await;
    let searched = started.elapsed().as_secs_f64();
    if let Some(f) = failure {
        server.shutdown().await;
        return Err(f);
    }
    if let Some(stop) = crate::interrupt::requested() {
        server.shutdown().await;
        return Err(Failure::Interrupted(stop));
    }
    let Some((best, _)) = best else {
        server.shutdown().await;
        return Err(Failure::Infrastructure(anyhow::anyhow!(
            "the search made no probe"
        )));
    };
    println!(
        "calibrated after {} probes in {searched:.0} s: {}",
        probes.len(),
        best.said()
    );

    // Every arm once on the calibrated world: the legacy one again (its residuals are the
    // ones written), the fixed ones against production.
    let scenario_path = out.join("scenario.toml");
    let calibrated = best.apply(&replay_text).map_err(usage).and_then(|text| {
        write_scenario(
            &scenario_path,
            &format!(
                "# Calibrated by `incident-lab calibrate` ({} probes): {}.\n{text}",
                probes.len(),
                best.said()
            ),
        )
    });
    let ran = match &calibrated {
        Ok(scenario) => Some(run(scenario, out.clone(), None).await),
        Err(_) => None,
    };
    server.shutdown().await;
    let calibrated = calibrated?;
    let report = ran
        .expect("run when the scenario was written")
        .map_err(Failure::Infrastructure)?;
    let Some(arm) = report.arms.iter().find(|a| a.name == legacy) else {
        return Err(Failure::Infrastructure(anyhow::anyhow!(
            "the calibrated run has no arm {legacy}"
        )));
    };
    let residuals = fit::residuals(arm, &observed, best.request_timeout_ms, fit_minutes);
    let md = fit::markdown(
        &observed.source,
        &base,
        &best,
        &probes,
        &residuals,
        searched,
    );
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "source": observed.source,
        "speed": args.speed,
        "fit_minutes": fit_minutes,
        "base": base,
        "calibrated": best,
        "knobs": knobs,
        "probes": probes,
        "search_seconds": searched,
        "residuals": residuals,
    }))
    .map_err(|e| Failure::Infrastructure(e.into()))?;
    write(&out.join("fit.md"), &md)?;
    write(&out.join("fit.json"), &json)?;
    let timeout_ms = calibrated.service.request_timeout.as_secs_f64() * 1000.0;
    let fidelity = crate::logs::fidelity::compare(&report, &observed, timeout_ms, 1.5);
    write(&out.join("fidelity.md"), &fidelity.markdown)?;
    write(
        &out.join("fidelity.json"),
        &serde_json::to_string_pretty(&fidelity).map_err(|e| Failure::Infrastructure(e.into()))?,
    )?;
    println!("\n{md}");
    println!("{}", fidelity.markdown);
    println!(
        "calibrated scenario in {}; fit.md, fidelity.md and the reports beside it",
        scenario_path.display()
    );
    // Per endpoint, the fitted cells outside (the cells themselves are in fit.md).
    let mut outside: std::collections::BTreeMap<&str, (usize, usize, Vec<u32>)> =
        Default::default();
    for r in residuals.iter().filter(|r| !r.held_out) {
        let e = outside.entry(r.endpoint.as_str()).or_default();
        e.1 += 1;
        if !r.within() {
            e.0 += 1;
            e.2.push(r.minute);
        }
    }
    let outside: Vec<String> = outside
        .into_iter()
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(endpoint, (n, of, minutes))| {
            let shown: Vec<String> = minutes.iter().take(5).map(u32::to_string).collect();
            let more = if minutes.len() > 5 { ", …" } else { "" };
            format!(
                "{endpoint} {n} of {of} (minutes {}{more})",
                shown.join(", ")
            )
        })
        .collect();
    // The fix's questions only: other legacy-like arms of the base answer the reproduction's.
    let fixed: Vec<&str> = report
        .arms
        .iter()
        .filter(|a| a.expect == Expect::Fixed)
        .map(|a| a.name.as_str())
        .collect();
    let unfixed: Vec<String> = fidelity
        .checks
        .iter()
        .filter(|c| !c.passed && fixed.contains(&c.arm.as_str()))
        .map(|c| format!("{} on {}: {} ({})", c.arm, c.endpoint, c.question, c.detail))
        .collect();
    if outside.is_empty() && unfixed.is_empty() {
        Ok(())
    } else {
        let mut said = Vec::new();
        if !outside.is_empty() {
            said.push(format!(
                "fitted cells outside the tolerance (see {}): {}",
                out.join("fit.md").display(),
                outside.join("; ")
            ));
        }
        if !unfixed.is_empty() {
            said.push(format!("on the calibrated world, {}", unfixed.join("; ")));
        }
        Err(Failure::Expectation(said.join("; ")))
    }
}
