//! `incident-lab run --target` and `merge`: a load against a service the harness did not start, and the shards of one run judged as one.

use super::*;

/// `run --target`: the arm's load (or one shard of it) against a running service.
pub(super) async fn run_target(args: RunArgs) -> Result<(), Failure> {
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
    let ca_pem = match &t.ca_cert {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            Failure::Usage(format!("--ca-cert {}: cannot read: {e}", path.display()))
        })?),
        None => None,
    };
    let target = crate::matrix::target::Target {
        tls: loadgen::Tls {
            ca_pem,
            insecure: t.insecure,
        },
        base: t.target.clone().unwrap_or_default(),
        secrets,
        admin_token: t.admin_token.clone(),
        database_url: t.database_url.clone(),
        shard,
        run_id,
        start_at: t.start_at,
    };
    let mut plan = crate::matrix::wiring::plan_for(
        &scenario,
        target.base.trim_end_matches('/'),
        &target.secrets,
        &target.run_id,
    );
    plan.shard = shard;
    plan.tls = target.tls.clone();
    crate::matrix::rails::check(&plan, t.max_rate, t.yes)
        .map_err(|e| Failure::Usage(e.to_string()))?;
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
pub(super) async fn merge(args: MergeArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let shards = crate::matrix::target::read_shards(&args.shards).map_err(Failure::Usage)?;
    let first = &shards[0];
    let scenario = crate::model::Scenario::parse(&first.scenario_file, &first.scenario_text)
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
pub(super) fn judged_report(
    report: crate::report::Report,
    out: &std::path::Path,
) -> Result<(), Failure> {
    report.write_all(out).map_err(Failure::Infrastructure)?;
    println!("\n{}", crate::report::markdown::render(&report));
    println!("reports in {}", out.display());
    if let Some(a) = report.arms.iter().find_map(|a| a.aborted.as_ref()) {
        return Err(Failure::Aborted(format!(
            "an [abort] threshold stopped the load at {:.1} s: {}",
            a.at_s, a.reason
        )));
    }
    if report.verdict == crate::report::Verdict::Pass {
        Ok(())
    } else {
        Err(Failure::Expectation(
            "the arm did not show what the scenario says it must (see above)".into(),
        ))
    }
}
