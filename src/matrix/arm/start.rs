//! The arm's first step: its fakes, the database's state before, the fault proxy or
//! PgBouncer in front of Postgres when the scenario asks, and the service (one process, or
//! instances behind the fleet's front) with the arm's switches.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use inbox_service::config::Secrets;
use sqlx::Connection;

use super::super::fakes::{disconnected_workspaces, FakesServer};
use super::super::invariant::{baseline, connect, rows_written, Baseline, RowCounts};
use super::super::wiring::service_env;
use crate::chaos::run::ServiceSlot;
use crate::chaos::FaultProxy;
use crate::fleet::pooler::PgBouncer;
use crate::fleet::Fleet;
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::report::ArmTimings;
use crate::service_proc::ServiceProcess;

/// What an arm started, and what its checks compare the end state against.
pub(super) struct Started {
    pub fakes: FakesServer,
    /// Workspaces seeded with their LinkedIn account disconnected.
    pub disconnected: Vec<i64>,
    pub rows_before: RowCounts,
    pub effects_before: Baseline,
    pub proxy: Option<FaultProxy>,
    pub pooler: Option<Arc<PgBouncer>>,
    pub secrets: Secrets,
    pub service: ServiceSlot,
    pub fleet: Option<Fleet>,
}

/// A fault proxy in front of `server`, for the service's connections to database `db`.
async fn link_proxy(server: &PgServer, db: &str) -> anyhow::Result<FaultProxy> {
    let options = server.connect_options(db);
    let target = format!("{}:{}", options.get_host(), options.get_port());
    let upstream = tokio::net::lookup_host(&target)
        .await
        .with_context(|| format!("resolving {target}"))?
        .next()
        .with_context(|| format!("{target} has no address"))?;
    FaultProxy::start(upstream)
        .await
        .context("starting the database link's fault proxy")
}

/// Starts everything the arm runs against, on clone `db`.
pub(super) async fn start(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &Arm,
    service_bin: &Path,
    out: &Path,
    timings: &mut ArmTimings,
) -> anyhow::Result<Started> {
    let prepared = Instant::now();
    let disconnected = disconnected_workspaces(server, db).await?;
    let fakes = FakesServer::start(scenario, disconnected.clone()).await?;
    let rows_before = rows_written(server, db).await?;
    let effects_before = {
        let mut conn = connect(server, db).await?;
        let b = baseline(&mut conn).await?;
        conn.close().await?;
        b
    };

    // With faults on the database link, the service reaches Postgres through the fault proxy
    // (the harness's own connections do not).
    crate::chaos::postgres::check_supported(scenario, server)?;
    for f in &scenario.faults {
        if let crate::model::Fault::Lock { table, .. } = &f.fault {
            crate::chaos::postgres::check_table(server, db, table).await?;
        }
    }
    let link_faults = scenario
        .faults
        .iter()
        .any(|f| f.kind().target() == crate::model::FaultTarget::Link);
    let proxy = match link_faults {
        false => None,
        true => Some(link_proxy(server, db).await?),
    };
    // Through PgBouncer, when the scenario has one: the instances' statement timeout is then
    // set on PgBouncer's server connections (it refuses the client's `options`).
    let pooler = match &scenario.pooler {
        Some(spec) => Some(Arc::new(
            PgBouncer::start(spec, server, scenario.service.statement_timeout)
                .await
                .context("starting PgBouncer")?,
        )),
        None => None,
    };
    let database_url = match (&proxy, &pooler) {
        (_, Some(p)) => p.url(server, db),
        (Some(p), None) => crate::chaos::timeline::via(&server.url(db, true), p.addr()),
        (None, None) => server.url(db, true),
    };
    let secrets = Secrets::random();
    timings.prepare_s = prepared.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let log = out.join(format!("arm-{}.service.log", arm.name));
    let access_log = scenario
        .access_log
        .then(|| access_log_path(out, &arm.name))
        .map(|p| {
            // A fresh file per arm: the service appends.
            let _ = std::fs::remove_file(&p);
            p.display().to_string()
        });
    let env_for = {
        let mut scenario = scenario.clone();
        if pooler.is_some() {
            scenario.service.statement_timeout = None;
        }
        let (arm, secrets) = (arm.clone(), secrets.clone());
        let (database_url, fakes_base) = (database_url.clone(), fakes.base.clone());
        move |switches: &inbox_service::Switches, bind: std::net::SocketAddr| {
            let arm = Arm {
                switches: *switches,
                ..arm.clone()
            };
            let mut env = service_env(
                &scenario,
                &arm,
                database_url.clone(),
                &fakes_base,
                &secrets,
                bind,
            );
            if let Some(p) = &access_log {
                env.push((inbox_service::access_log::ACCESS_LOG_ENV.into(), p.clone()));
            }
            env
        }
    };
    let env_for = Arc::new(env_for);
    let (service, fleet) = match scenario.fleet {
        None => {
            let process = ServiceProcess::start(
                service_bin,
                &env_for(&arm.switches, ([127, 0, 0, 1], 0).into()),
                &log,
            )
            .await?;
            let env_for = env_for.clone();
            let slot = ServiceSlot::new(
                process,
                service_bin.to_owned(),
                arm.switches,
                log.clone(),
                move |s: &inbox_service::Switches, bind: std::net::SocketAddr| env_for(s, bind),
            );
            (slot, None)
        }
        Some(spec) => {
            let start: crate::fleet::StartInstance = {
                let (env_for, bin, switches) =
                    (env_for.clone(), service_bin.to_owned(), arm.switches);
                let (out, name) = (out.to_owned(), arm.name.clone());
                Arc::new(move |i: usize| {
                    let env = env_for(&switches, ([127, 0, 0, 1], 0).into());
                    let (bin, log) = (bin.clone(), out.join(format!("arm-{name}.service-{i}.log")));
                    Box::pin(async move { ServiceProcess::start(&bin, &env, &log).await })
                })
            };
            let fleet = Fleet::start(spec, start, pooler.clone().map(|p| (p, db.to_owned())))
                .await
                .context("starting the service instances")?;
            let slot = ServiceSlot::detached(
                fleet.base.clone(),
                service_bin.to_owned(),
                arm.switches,
                log.clone(),
            );
            (slot, Some(fleet))
        }
    };
    timings.service_start_s = t0.elapsed().as_secs_f64();
    Ok(Started {
        fakes,
        disconnected,
        rows_before,
        effects_before,
        proxy,
        pooler,
        secrets,
        service,
        fleet,
    })
}

/// Where `matrix --access-log` has an arm's service write its access log.
pub fn access_log_path(out: &Path, arm: &str) -> std::path::PathBuf {
    out.join(format!("arm-{arm}.access.jsonl"))
}
