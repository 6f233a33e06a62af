//! From a scenario to what the arm runs: the load generator's plan and the service's
//! environment, with fresh secrets per arm.

use inbox_service::config::{Config, ProviderUrls, Secrets};
use incident_wire::route;
use loadgen::{Endpoint, Plan, Sessions, Stream};

use crate::model::{Arm, EndpointKind, Scenario};

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
                    path: route::CRON_BACKGROUND_JOBS.path.into(),
                    secret: secrets.cron.clone(),
                },
                EndpointKind::CronFollowups => Endpoint::Cron {
                    path: route::CRON_FOLLOWUPS.path.into(),
                    secret: secrets.cron.clone(),
                },
            };
            Stream {
                name: s.name.clone(),
                endpoint,
                arrival: s.arrival.clone(),
                retry: s.retry_policy(),
                max_in_flight: s.in_flight(),
                delivery: s.delivery(),
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
        shard: loadgen::Shard::default(),
        tls: loadgen::Tls::default(),
    }
}

/// The service's environment for `arm`: database, bind, secrets, provider URLs, the
/// scenario's limits, the arm's switches — rendered by the service's own [`Config`].
pub(crate) fn service_env(
    scenario: &Scenario,
    arm: &Arm,
    url: String,
    fakes: &str,
    secrets: &Secrets,
    bind: std::net::SocketAddr,
) -> Vec<(String, String)> {
    let config = Config {
        bind,
        database_url: url,
        switches: arm.switches,
        limits: scenario.limits(),
        secrets: secrets.clone(),
        providers: ProviderUrls {
            ghl: format!("{fakes}/ghl"),
            unipile: format!("{fakes}/unipile"),
            ai: format!("{fakes}/ai"),
        },
    };
    let mut env: Vec<(String, String)> = config
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push(("RUST_LOG".into(), "info,sqlx=warn".into()));
    // Deliberate bugs, for the tests that show a check failing (a build without the service's
    // `faults` feature refuses to start with it).
    if let Ok(list) = std::env::var(inbox_service::state::TEST_FAULTS_ENV) {
        env.push((inbox_service::state::TEST_FAULTS_ENV.into(), list));
    }
    env
}
