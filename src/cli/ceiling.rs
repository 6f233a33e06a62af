//! `incident-lab ceiling`: the harness's own limits against wrk and pgbench.

use super::*;

/// `ceiling`: the generator against wrk; unless `--no-database`, ingest and drain on a
/// provisioned Postgres against pgbench.
pub(super) async fn ceiling(args: CeilingArgs) -> Result<(), Failure> {
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
        https: args.https,
    };
    let report = if args.no_database {
        crate::ceiling::run(&opts, None).await
    } else {
        let scenario = crate::model::Scenario::load(&args.scenario)
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
