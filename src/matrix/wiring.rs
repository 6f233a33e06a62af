//! From a scenario to what the arm runs: the load generator's plan and the service's
//! environment, with fresh secrets per arm.

use std::time::Duration;

use loadgen::{Endpoint, Plan, Sessions, Stream};

use crate::scenario::{Arm, EndpointKind, Scenario};

/// Secrets of an arm: fresh per service process, never logged.
pub(crate) struct Secrets {
    pub webhook: String,
    pub cron: String,
    pub admin: String,
    pub session: String,
}

impl Secrets {
    pub fn fresh() -> Self {
        let r = || format!("{:032x}", rand::random::<u128>());
        Self {
            webhook: r(),
            cron: r(),
            admin: r(),
            session: r(),
        }
    }
}

/// The load generator's plan for `scenario` against the service at `base`.
pub(crate) fn plan_for(scenario: &Scenario, base: &str, secrets: &Secrets, run_id: &str) -> Plan {
    let scale = &scenario.scale;
    let streams = scenario
        .streams
        .iter()
        .map(|s| {
            let sessions = Sessions {
                secret: secrets.session.clone(),
                workspaces: scale.workspaces,
                scope_workspaces: s.scope_workspaces,
                users: s.users,
                signed_out_pct: s.signed_out_pct,
            };
            let endpoint = match s.endpoint {
                EndpointKind::Webhook => Endpoint::EmailWebhook {
                    event: s.event.clone().unwrap_or_default(),
                    secret: secrets.webhook.clone(),
                    workspaces: scale.workspaces,
                    leads: scale.leads,
                },
                EndpointKind::InboxPage => Endpoint::InboxPage { sessions },
                EndpointKind::InboxCounts => Endpoint::InboxCounts { sessions },
                EndpointKind::AiDraft => Endpoint::AiDraft { sessions },
                EndpointKind::CronBackgroundJobs => Endpoint::Cron {
                    path: "/api/cron/background-jobs".into(),
                    secret: secrets.cron.clone(),
                },
                EndpointKind::CronFollowups => Endpoint::Cron {
                    path: "/api/cron/followups".into(),
                    secret: secrets.cron.clone(),
                },
            };
            Stream {
                name: s.name.clone(),
                endpoint,
                arrival: s.arrival.to_arrival(),
                retry: s.retry_policy(),
                max_in_flight: s.in_flight(),
            }
        })
        .collect();
    Plan {
        host: base.to_owned(),
        streams,
        duration: scenario.duration,
        seed: scenario.seed,
        poisson: scenario.poisson,
        client_timeout: scenario.client_timeout,
        late_after: scenario.late_after,
        run_id: run_id.to_owned(),
    }
}

/// The service's environment for `arm`: database, bind, secrets, provider URLs, the
/// scenario's limits, the arm's switches.
pub(crate) fn service_env(
    scenario: &Scenario,
    arm: &Arm,
    url: String,
    fakes: &str,
    secrets: &Secrets,
) -> Vec<(String, String)> {
    let l = scenario.limits();
    let ms = |d: Duration| d.as_millis().to_string();
    let mut env = vec![
        ("DATABASE_URL".to_owned(), url),
        ("BIND".into(), "127.0.0.1:0".into()),
        ("WEBHOOK_SECRET".into(), secrets.webhook.clone()),
        ("CRON_SECRET".into(), secrets.cron.clone()),
        ("ADMIN_TOKEN".into(), secrets.admin.clone()),
        ("SESSION_SECRET".into(), secrets.session.clone()),
        ("GHL_BASE_URL".into(), format!("{fakes}/ghl")),
        ("UNIPILE_BASE_URL".into(), format!("{fakes}/unipile")),
        ("AI_BASE_URL".into(), format!("{fakes}/ai")),
        ("DB_POOL_MAX".into(), l.pool_max.to_string()),
        ("DB_ACQUIRE_TIMEOUT_MS".into(), ms(l.acquire_timeout)),
        ("REQUEST_TIMEOUT_MS".into(), ms(l.request_timeout)),
        ("COUNTS_QUERY_TIMEOUT_MS".into(), ms(l.counts_query_timeout)),
        ("COUNTS_CACHE_TTL_MS".into(), ms(l.counts_cache_ttl)),
        ("AI_VERIFY_BUDGET_MS".into(), ms(l.ai_verify_budget)),
        ("PROVIDER_TIMEOUT_MS".into(), ms(l.provider_timeout)),
        (
            "PROVIDER_MAX_ATTEMPTS".into(),
            l.provider_max_attempts.to_string(),
        ),
        ("PROVIDER_BACKOFF_MS".into(), ms(l.provider_backoff)),
        ("CRON_BATCH_LIMIT".into(), l.cron_batch_limit.to_string()),
        ("CRON_TIME_BUDGET_MS".into(), ms(l.cron_time_budget)),
        (
            "WORKER_CONCURRENCY".into(),
            l.worker_concurrency.to_string(),
        ),
        ("RUST_LOG".into(), "info,sqlx=warn".into()),
    ];
    if let Some(t) = l.statement_timeout {
        env.push(("DB_STATEMENT_TIMEOUT_MS".into(), ms(t)));
    }
    for (name, on) in arm.switches.to_map() {
        env.push((name.to_owned(), if on { "1" } else { "0" }.to_owned()));
    }
    env
}
