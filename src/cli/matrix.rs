//! `incident-lab matrix` and `run`: the arms on a provisioned Postgres, judged.

use super::*;

/// `matrix` and `run`: load and check the scenario (exit 2), provision and seed (exit 3),
/// run the arms, write the reports, judge (exit 1 when an arm did not show what it must).
pub(super) async fn matrix(
    command: &str,
    path: &std::path::Path,
    backend: &BackendArgs,
    out: Option<PathBuf>,
    only: Option<Vec<String>>,
    chaos: &ChaosArgs,
    repeat: u32,
) -> Result<(), Failure> {
    let mut scenario =
        crate::model::Scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    scenario
        .add_timeline(&chaos.faults, &chaos.flips)
        .map_err(Failure::Usage)?;
    scenario.access_log = chaos.access_log;
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
                eprintln!("\n== repeat {k}/{repeat} ==");
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
    let aborted = reports
        .iter()
        .flat_map(|r| &r.arms)
        .find_map(|a| Some((a.name.as_str(), a.aborted.as_ref()?)));
    if let Some((arm, a)) = aborted {
        return Err(Failure::Aborted(format!(
            "arm {arm}: an [abort] threshold stopped the load at {:.1} s: {}",
            a.at_s, a.reason
        )));
    }
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
