//! The seeded incident dataset and the per-arm template clones.
//!
//! [`Template::prepare`] creates a database, runs the service's migrations and fills it with
//! deterministic, set-based SQL (every value is a hash of the row number and the seed, so the
//! same seed gives the same data). Each arm then gets a fresh copy with
//! [`Template::clone_for_arm`] (`CREATE DATABASE … TEMPLATE`), with or without the Phase 53
//! indexes.

use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::model::Scale;
use crate::postgres::{PgServer, ProvisionError};

/// Row counts and a content hash: equal fingerprints mean equal data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fingerprint {
    pub workspaces: i64,
    pub disconnected_workspaces: i64,
    pub leads: i64,
    pub messages: i64,
    pub inbound_messages: i64,
    pub followup_tasks: i64,
    /// md5 over the content of every seeded table (times excluded: they follow the clock).
    pub content_md5: String,
}

/// Reads the fingerprint of a seeded database.
pub async fn fingerprint(conn: &mut PgConnection) -> Result<Fingerprint, sqlx::Error> {
    let row: (i64, i64, i64, i64, i64, i64, String) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM workspaces),
            (SELECT count(*) FROM workspaces WHERE unipile_status = 'disconnected'),
            (SELECT count(*) FROM leads),
            (SELECT count(*) FROM messages),
            (SELECT count(*) FROM messages WHERE direction = 'inbound'),
            (SELECT count(*) FROM followup_tasks),
            md5(
              (SELECT coalesce(string_agg(md5(concat_ws(',', id, unipile_status)), '' ORDER BY id), '') FROM workspaces) ||
              (SELECT coalesce(string_agg(md5(concat_ws(',', id, workspace_id, status, sentiment, emails_sent)), '' ORDER BY id), '') FROM leads) ||
              (SELECT coalesce(md5(string_agg(concat_ws(',', lead_id, direction, channel, is_read), '' ORDER BY id)), '') FROM messages) ||
              (SELECT coalesce(string_agg(concat_ws(',', lead_id, channel), '' ORDER BY lead_id), '') FROM followup_tasks)
            )",
    )
    .fetch_one(conn)
    .await?;
    Ok(Fingerprint {
        workspaces: row.0,
        disconnected_workspaces: row.1,
        leads: row.2,
        messages: row.3,
        inbound_messages: row.4,
        followup_tasks: row.5,
        content_md5: row.6,
    })
}

/// Fills a migrated, empty database. Every value derives from `hashint8extended(row, seed)`.
pub async fn seed_database(
    conn: &mut PgConnection,
    scale: &Scale,
    seed: i64,
) -> Result<(), sqlx::Error> {
    let statements: [(&str, &str); 4] = [
        (
            "workspaces",
            "INSERT INTO workspaces (id, name, unipile_status, unipile_checked_at)
             SELECT w, 'Workspace ' || w,
                    CASE WHEN abs(hashint8extended(w, $1)) % 100 < $3 THEN 'disconnected' ELSE 'connected' END,
                    now()
             FROM generate_series(1, $2::bigint) AS w",
        ),
        (
            "leads",
            "INSERT INTO leads (id, workspace_id, email, first_name, status, sentiment, emails_sent, emails_opened)
             SELECT i, ((i - 1) % $2) + 1,
                    'lead' || i || '@example.test', 'Lead' || i,
                    (ARRAY['new','contacted','contacted','contacted','replied','interested',
                           'not_interested','meeting_booked','bounced'])[1 + abs(h) % 9],
                    (ARRAY['positive','neutral','negative',NULL])[1 + abs(h >> 8) % 4],
                    abs(h >> 16) % 12, abs(h >> 24) % 6
             FROM generate_series(1, $3::bigint) AS i,
                  LATERAL (SELECT hashint8extended(i, $1) AS h) AS x",
        ),
        (
            "messages",
            "INSERT INTO messages (workspace_id, lead_id, direction, channel, subject, body, is_read, sent_at)
             SELECT ((l - 1) % $2) + 1, l,
                    CASE WHEN abs(h) % 100 < 35 THEN 'inbound' ELSE 'outbound' END,
                    CASE WHEN abs(h >> 7) % 10 = 0 THEN 'linkedin' ELSE 'email' END,
                    'Re: proposal ' || (l % 97),
                    'Hi, following up on my last note about your calendar. Message ' || i,
                    abs(h >> 11) % 100 < 70,
                    now() - make_interval(secs => abs(h >> 13) % (90 * 86400))
             FROM generate_series(1, $4::bigint) AS i,
                  LATERAL (SELECT hashint8extended(i, $1) AS h,
                                  1 + abs(hashint8extended(i, $1 + 1)) % $3 AS l) AS x",
        ),
        (
            "followup_tasks",
            "INSERT INTO followup_tasks (workspace_id, lead_id, channel, due_at)
             SELECT workspace_id, id,
                    CASE WHEN abs(h >> 4) % 2 = 0 THEN 'linkedin' ELSE 'email' END,
                    now() - make_interval(secs => abs(h >> 12) % 3600)
             FROM leads, LATERAL (SELECT hashint8extended(id, $1 + 2) AS h) AS x
             WHERE abs(h) % 100 < $2",
        ),
    ];
    // The harness's clusters run `synchronous_commit = off`. The VACUUM below cannot mark a
    // page visible to all while the commit of its rows' inserter — or of any transaction
    // sharing its commit-log group, such as the ANALYZE of the table vacuumed before — may be
    // unflushed; every arm's clone would then start with an empty visibility map, its
    // index-only scans fetching the heap, unlike a vacuumed production table. This session
    // commits synchronously.
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut *conn)
        .await?;
    let mut tx = conn.begin().await?;
    for (table, sql) in statements {
        let started = Instant::now();
        let query = sqlx::query(sql).bind(seed);
        let query = match table {
            "workspaces" => query
                .bind(i64::from(scale.workspaces))
                .bind(i32::from(scale.disconnected_pct)),
            "leads" => query
                .bind(i64::from(scale.workspaces))
                .bind(i64::from(scale.leads)),
            "messages" => query
                .bind(i64::from(scale.workspaces))
                .bind(i64::from(scale.leads))
                .bind(scale.messages as i64),
            _ => query.bind(i32::from(scale.followups_pct)),
        };
        let rows = query.execute(&mut *tx).await?.rows_affected();
        tracing::debug!(table, rows, elapsed = ?started.elapsed(), "seeded");
    }
    sqlx::query("SELECT setval('leads_id_seq', $1)")
        .bind(i64::from(scale.leads))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sqlx::raw_sql("VACUUM (ANALYZE)").execute(conn).await?;
    Ok(())
}

/// What preparing a template cost, for reports and the closing note.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrepareTimings {
    pub migrate: Duration,
    pub seed: Duration,
}

/// A migrated, seeded database that arms are cloned from. It holds no open connection.
#[derive(Debug)]
pub struct Template {
    name: String,
    pub scale: Scale,
    pub seed: i64,
    pub timings: PrepareTimings,
}

/// Errors preparing or cloning the dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("invalid scale: {0}")]
    Scale(String),
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> DatasetError {
    move |source| DatasetError::Sql { what, source }
}

impl Template {
    /// Creates, migrates and seeds a new template database on `server`.
    #[tracing::instrument(skip(server), fields(backend = %server.backend()))]
    pub async fn prepare(server: &PgServer, scale: Scale, seed: i64) -> Result<Self, DatasetError> {
        scale.validate().map_err(DatasetError::Scale)?;
        let name = PgServer::unique_name("template");
        server.create_database(&name).await?;
        let mut conn = server
            .connect_options(&name)
            // Seeding runs longer than any scenario's statement timeout.
            .options([("statement_timeout", "0")])
            .connect()
            .await
            .map_err(sql("connect to the template"))?;
        let started = Instant::now();
        inbox_service::db::MIGRATOR.run(&mut conn).await?;
        let migrate = started.elapsed();
        let started = Instant::now();
        seed_database(&mut conn, &scale, seed)
            .await
            .map_err(sql("seed the dataset"))?;
        let seeded = started.elapsed();
        conn.close().await.map_err(sql("close the template"))?;
        tracing::info!(%scale, ?migrate, seed_time = ?seeded, "template ready");
        Ok(Self {
            name,
            scale,
            seed,
            timings: PrepareTimings {
                migrate,
                seed: seeded,
            },
        })
    }

    /// The template database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh copy of the template for one arm; `phase53_indexes` adds the Phase 53c
    /// indexes to the copy. Returns the database name and how long the copy took, with its
    /// indexes (~1 s on the default dataset, which a report would otherwise count elsewhere).
    pub async fn clone_for_arm(
        &self,
        server: &PgServer,
        arm: &str,
        phase53_indexes: bool,
    ) -> Result<(String, Duration), DatasetError> {
        let name = PgServer::unique_name(&sanitize(arm));
        let started = Instant::now();
        server.clone_database(&self.name, &name).await?;
        if phase53_indexes {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(
                    server
                        .connect_options(&name)
                        .options([("statement_timeout", "0")]),
                )
                .await
                .map_err(sql("connect to the arm database"))?;
            inbox_service::db::apply_phase53_indexes(&pool)
                .await
                .map_err(sql("create the Phase 53 indexes"))?;
            pool.close().await;
        }
        Ok((name, started.elapsed()))
    }
}

/// Database names take lowercase letters, digits and underscores.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_names_become_safe_database_names() {
        assert_eq!(sanitize("pre-phase-53"), "pre_phase_53");
        assert_eq!(sanitize("ASYNC+counts"), "async_counts");
    }
}
