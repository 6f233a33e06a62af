//! The scale-out part of a scenario: how many service instances run (or how the platform
//! starts them as concurrency rises), and the transaction pooler between them and Postgres.

use serde::Deserialize;

/// Connections the harness keeps for itself on the server (seeding, probes, invariants).
pub const HARNESS_CONNECTIONS: u32 = 5;

/// `[service] autoscale = { min, max, per_instance_concurrency }` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Requests in flight per instance before the platform starts another.
    pub per_instance_concurrency: u32,
}

/// The service instances of each arm, behind one front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FleetSpec {
    /// Instances started before the load.
    pub min: u32,
    /// The most instances the platform runs.
    pub max: u32,
    /// With autoscaling: in-flight requests per instance that start another one.
    pub per_instance_concurrency: Option<u32>,
}

impl FleetSpec {
    /// From `[service] instances` / `autoscale`; `None` when neither is set.
    pub fn from_file(
        instances: Option<u32>,
        autoscale: Option<Autoscale>,
    ) -> Result<Option<Self>, String> {
        match (instances, autoscale) {
            (Some(_), Some(_)) => Err(
                "set `instances` (a fixed number) or `autoscale` (started as concurrency rises), not both"
                    .into(),
            ),
            (Some(0), None) => Err("field `instances` = 0: at least 1 instance is needed".into()),
            (Some(n), None) => Ok(Some(Self {
                min: n,
                max: n,
                per_instance_concurrency: None,
            })),
            (None, Some(a)) => {
                if a.min == 0 || a.max < a.min {
                    return Err(format!(
                        "`autoscale` min = {}, max = {}: min must be at least 1 and max at least min",
                        a.min, a.max
                    ));
                }
                if a.per_instance_concurrency == 0 {
                    return Err("`autoscale` per_instance_concurrency must be at least 1".into());
                }
                Ok(Some(Self {
                    min: a.min,
                    max: a.max,
                    per_instance_concurrency: Some(a.per_instance_concurrency),
                }))
            }
            (None, None) => Ok(None),
        }
    }

    /// One instance, no autoscaling (a pooler alone still runs behind the front).
    pub fn single() -> Self {
        Self {
            min: 1,
            max: 1,
            per_instance_concurrency: None,
        }
    }
}

/// `[pooler]`: PgBouncer between the service instances and Postgres.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolerSpec {
    /// Only `"pgbouncer"` (Debian's package) is started by the harness.
    #[serde(default = "pgbouncer")]
    pub kind: String,
    /// `transaction` (as Supavisor and the production pooler; needs PgBouncer ≥ 1.21, see
    /// `pooler.rs`) or `session`.
    #[serde(default = "transaction")]
    pub pool_mode: String,
    /// Server connections per database and user.
    pub default_pool_size: u32,
    /// Client connections PgBouncer accepts in all; past it, it refuses new ones.
    pub max_client_conn: u32,
    /// How long a client may wait for a server connection before PgBouncer gives up on it.
    #[serde(default = "query_wait_timeout", with = "incident_wire::duration")]
    pub query_wait_timeout: std::time::Duration,
}

fn pgbouncer() -> String {
    "pgbouncer".into()
}
fn transaction() -> String {
    "transaction".into()
}
fn query_wait_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(120)
}

impl PoolerSpec {
    /// Checks the fields on their own.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "pgbouncer" {
            return Err(format!(
                "field `kind` = {:?}: the harness starts \"pgbouncer\" only",
                self.kind
            ));
        }
        if !matches!(self.pool_mode.as_str(), "transaction" | "session") {
            return Err(format!(
                "field `pool_mode` = {:?} must be \"transaction\" or \"session\"",
                self.pool_mode
            ));
        }
        if self.default_pool_size == 0 || self.max_client_conn == 0 {
            return Err("`default_pool_size` and `max_client_conn` must be at least 1".into());
        }
        if self.query_wait_timeout.as_secs() == 0 {
            return Err(
                "`query_wait_timeout` must be at least 1s (PgBouncer counts whole seconds)".into(),
            );
        }
        Ok(())
    }
}

/// Connections one service instance opens at most: its pool and its one operations
/// connection (`inbox_service::state`).
pub fn per_instance(pool_max: u32) -> u32 {
    pool_max + 1
}

/// Whether the servers connections fit: without a pooler every instance's pool reaches
/// Postgres; with one, only the pooler's pool does. `Err` says what to change.
pub fn check_connections(
    fleet: &FleetSpec,
    pool_max: u32,
    pooler: Option<&PoolerSpec>,
    max_connections: u32,
) -> Result<(), String> {
    let room = max_connections.saturating_sub(HARNESS_CONNECTIONS);
    match pooler {
        None => {
            let need = fleet.max * per_instance(pool_max);
            if need > room {
                return Err(format!(
                    "{} instances × {} connections (pool_max {pool_max} + 1) = {need} is over what max_connections = {max_connections} leaves the service ({room}, after {HARNESS_CONNECTIONS} for the harness): Postgres would refuse them with \"too many clients\". Put a [pooler] in front, or lower `pool_max` or the instances",
                    fleet.max,
                    per_instance(pool_max)
                ));
            }
        }
        Some(p) => {
            if p.default_pool_size > room {
                return Err(format!(
                    "[pooler] default_pool_size = {} is over what max_connections = {max_connections} leaves ({room}, after {HARNESS_CONNECTIONS} for the harness)",
                    p.default_pool_size
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooler(size: u32) -> PoolerSpec {
        PoolerSpec {
            kind: pgbouncer(),
            pool_mode: transaction(),
            default_pool_size: size,
            max_client_conn: 200,
            query_wait_timeout: query_wait_timeout(),
        }
    }

    #[test]
    fn instances_times_pools_over_max_connections_need_a_pooler() {
        let twenty = FleetSpec::from_file(
            None,
            Some(Autoscale {
                min: 1,
                max: 20,
                per_instance_concurrency: 5,
            }),
        )
        .unwrap()
        .unwrap();
        let err = check_connections(&twenty, 10, None, 60).unwrap_err();
        assert!(
            err.contains("20 instances × 11 connections") && err.contains("[pooler]"),
            "{err}"
        );
        // Through a pooler only its pool reaches Postgres.
        check_connections(&twenty, 10, Some(&pooler(15)), 60).unwrap();
        assert!(check_connections(&twenty, 10, Some(&pooler(58)), 60).is_err());
        // One instance of 10 fits in 60.
        check_connections(&FleetSpec::single(), 10, None, 60).unwrap();
        // Exactly at the edge: 5 × 11 = 55 = 60 − 5.
        let five = FleetSpec::from_file(Some(5), None).unwrap().unwrap();
        check_connections(&five, 10, None, 60).unwrap();
        assert!(check_connections(&five, 11, None, 60).is_err());
    }

    #[test]
    fn fleet_fields_are_checked() {
        assert!(FleetSpec::from_file(Some(0), None).is_err());
        let a = Autoscale {
            min: 3,
            max: 2,
            per_instance_concurrency: 1,
        };
        assert!(FleetSpec::from_file(None, Some(a))
            .unwrap_err()
            .contains("max at least min"));
        let a = Autoscale {
            min: 1,
            max: 2,
            per_instance_concurrency: 0,
        };
        assert!(FleetSpec::from_file(None, Some(a)).is_err());
        assert!(FleetSpec::from_file(
            Some(2),
            Some(Autoscale {
                min: 1,
                max: 2,
                per_instance_concurrency: 1
            })
        )
        .is_err());
        assert_eq!(FleetSpec::from_file(None, None), Ok(None));
        let mut p = pooler(10);
        p.pool_mode = "statement".into();
        assert!(p.validate().unwrap_err().contains("pool_mode"));
    }
}
/// Instances over time and what went wrong starting them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetReport {
    pub min: u32,
    pub max: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_instance_concurrency: Option<u32>,
    /// `(seconds into the load, instances answering)` at each change (0: before the load).
    pub instances: Vec<(f64, u32)>,
    pub failed_starts: u32,
    /// Why starts failed (the first few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_errors: Vec<String>,
    /// The most pooled connections each instance had in use at a scrape, by instance.
    #[serde(default)]
    pub connections_max: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<PoolerReport>,
}

/// What PgBouncer did over the arm.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolerReport {
    pub pool_mode: String,
    pub default_pool_size: u32,
    pub max_client_conn: u32,
    /// The most clients waiting for a server connection at a scrape.
    pub cl_waiting_max: f64,
    /// The most server connections in use at a scrape.
    pub sv_active_max: f64,
    /// The longest a waiting client had waited at a scrape (ms).
    pub maxwait_max_ms: f64,
    /// Time clients waited for a server connection, per transaction (ms), over the arm.
    pub wait_per_transaction_ms: f64,
    pub transactions: f64,
    /// Client connections PgBouncer refused (`no more connections allowed`), from its log.
    pub refused_clients: u64,
}
