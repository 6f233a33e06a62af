//! `incident-lab db up`: a provisioned, seeded Postgres until Ctrl-C.

use super::*;

pub(super) async fn db_up(args: DbUpArgs) -> Result<(), Failure> {
    let scale = args.scale.scale();
    scale.validate().map_err(Failure::Usage)?;
    let request = args.postgres.request();
    let server = or_stop(provision(&request)).await??;
    println!("{}", provisioned(&server));
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
