//! The reference domain's schema.
//!
//! The migrations describe production as it stood before Phase 53. The indexes Phase 53c
//! adds for the inbox counts are applied separately ([`apply_phase53_indexes`]) so that a
//! legacy arm runs on the schema the incident happened on.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// Migrations for the legacy schema (every table the fixes need exists, since a deploy ships
/// tables before flags are turned on; only the Phase 53 indexes are held back).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The Phase 53c indexes behind the fixed inbox counts.
pub const PHASE53_INDEXES: &str = include_str!("../sql/phase53_indexes.sql");

/// Creates the Phase 53 indexes (idempotent).
pub async fn apply_phase53_indexes(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(PHASE53_INDEXES).execute(pool).await?;
    Ok(())
}

/// Lowers `statement_timeout` to `limit` for the rest of the caller's transaction — never above
/// the database's own timeout (the role's or the connection's): a fix that raised it would let
/// a statement run longer than production allows.
pub async fn bound_statements(tx: &mut PgConnection, limit: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('statement_timeout', (CASE
             WHEN current_setting('statement_timeout')::interval = interval '0' THEN $1
             ELSE least($1, (extract(epoch FROM current_setting('statement_timeout')::interval) * 1000)::int8)
         END)::text, true)",
    )
    .bind(limit.as_millis().max(1) as i64)
    .execute(tx)
    .await?;
    Ok(())
}
