//! `incident-lab up`: one arm's world — a seeded clone, the fake providers, the service with the
//! arm's switches — left running for an engineer and any tool they point at it (a browser,
//! curl, k6, oha), until Ctrl-C. What it prints is what such a tool needs: the URLs, the
//! secrets, a signed webhook and a session cookie, ready to paste.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use inbox_service::config::Secrets;
use incident_wire::{route, Session, ACCESS_COOKIE, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use super::fakes::{disconnected_workspaces, tell_disconnected, FakesServer};
use super::wiring::service_env;
use crate::dataset::Template;
use crate::model::{Arm, Scenario};
use crate::postgres::PgServer;
use crate::service_proc::ServiceProcess;

/// What `up` brings up.
pub struct StackOptions<'a> {
    pub service_bin: &'a Path,
    /// Where the service listens (port 0: any free one).
    pub listen: std::net::SocketAddr,
    /// Where the service log goes.
    pub out: &'a Path,
    /// The service's secrets (fresh random ones when `None`), e.g. from the environment so a
    /// load generator in another container can sign with them.
    pub secrets: Option<Secrets>,
    /// Fake providers already running (`incident-lab fakes`, another container) instead of
    /// ones of its own.
    pub fakes: Option<String>,
}

/// Brings up `arm`'s world on `server`, prints how to reach it, and holds it until the process
/// is asked to stop; then tears it down (the clone is dropped, the service and fakes stopped).
pub async fn up(
    scenario: &Scenario,
    server: &PgServer,
    template: &Template,
    arm: &Arm,
    options: &StackOptions<'_>,
) -> anyhow::Result<()> {
    let (db, _) = template
        .clone_for_arm(server, &arm.name, arm.switches.counts_cache_fallback)
        .await
        .context("cloning the template")?;
    let result = serve(scenario, server, &db, arm, options).await;
    server.drop_database(&db).await?;
    result
}

async fn serve(
    scenario: &Scenario,
    server: &PgServer,
    db: &str,
    arm: &Arm,
    options: &StackOptions<'_>,
) -> anyhow::Result<()> {
    let disconnected = disconnected_workspaces(server, db).await?;
    let (own_fakes, fakes_base) = match &options.fakes {
        Some(base) => {
            let base = base.trim_end_matches('/').to_owned();
            tell_disconnected(&base, &disconnected).await?;
            (None, base)
        }
        None => {
            let own = FakesServer::start(scenario, disconnected).await?;
            let base = own.base.clone();
            (Some(own), base)
        }
    };
    let secrets = options.secrets.clone().unwrap_or_else(Secrets::random);
    std::fs::create_dir_all(options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let log = options.out.join(format!("up-{}.service.log", arm.name));
    let env = service_env(
        scenario,
        arm,
        server.url(db, true),
        &fakes_base,
        &secrets,
        options.listen,
    );
    let service = ServiceProcess::start(options.service_bin, &env, &log).await?;
    print!(
        "{}",
        how_to_reach(
            &service.base,
            &fakes_base,
            &server.url(db, true),
            &secrets,
            arm,
            scenario.scale.workspaces,
            &log,
            super::unix_now(),
        )
    );
    println!("up; Ctrl-C to stop and clean up");
    crate::interrupt::stopped().await;
    service.stop().await;
    drop(own_fakes);
    Ok(())
}

/// The text `up` prints: every URL and secret, a signed webhook (recomputed by the shell at each
/// paste, as signatures go stale), and a session cookie for the inbox of workspaces 1–3: a small
/// user's, whose page the legacy arms still serve (an agency-wide scope is what times out).
#[allow(clippy::too_many_arguments)]
pub fn how_to_reach(
    service: &str,
    fakes: &str,
    database_url: &str,
    secrets: &Secrets,
    arm: &Arm,
    workspaces: u32,
    log: &Path,
    now: i64,
) -> String {
    let scope: Vec<i64> = (1..=i64::from(workspaces.clamp(1, 3))).collect();
    let session = Session {
        user: "up-user".into(),
        workspaces: scope,
        expires_at: now + 24 * 3600,
    };
    let cookie = incident_wire::mint_access(&secrets.session, &session);
    let flags: Vec<String> = arm
        .switches
        .to_map()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let body = r#"{"event_id":"up-'"$ts"'","type":"EMAIL_SENT","workspace_id":1,"lead_email":"lead1@example.test","occurred_at":"'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'"}"#;
    let mut out = String::new();
    let _ = writeln!(out, "arm {}: {}", arm.name, flags.join(", "));
    let _ = writeln!(out, "service:      {service}");
    let _ = writeln!(out, "metrics:      {service}/metrics");
    let _ = writeln!(out, "database:     {database_url}");
    let _ = writeln!(
        out,
        "fakes:        {fakes}  (knobs: GET|PUT {fakes}/_control/ghl|unipile|ai; calls: {fakes}/_counters)"
    );
    let _ = writeln!(out, "service log:  {}", log.display());
    let _ = writeln!(out, "secrets:");
    let _ = writeln!(out, "  WEBHOOK_SECRET={}", secrets.webhook);
    let _ = writeln!(out, "  CRON_SECRET={}", secrets.cron);
    let _ = writeln!(out, "  ADMIN_TOKEN={}", secrets.admin);
    let _ = writeln!(out, "  SESSION_SECRET={}", secrets.session);
    let _ = writeln!(
        out,
        "the inbox of workspaces 1–{} (a browser: set this cookie on {service}):",
        session.workspaces.len()
    );
    let _ = writeln!(
        out,
        "  curl -s -H 'Cookie: {ACCESS_COOKIE}={cookie}' {service}{}",
        route::INBOX_PAGE.path
    );
    let _ = writeln!(
        out,
        "a signed EMAIL_SENT webhook (signed at each paste; needs openssl):"
    );
    let _ = writeln!(
        out,
        "  ts=$(date +%s); body='{body}'; sig=$(printf '%s.%s' \"$ts\" \"$body\" | openssl dgst -sha256 -hmac '{}' | sed 's/^.*= //'); curl -s -H 'content-type: application/json' -H \"{TIMESTAMP_HEADER}: $ts\" -H \"{SIGNATURE_HEADER}: $sig\" -d \"$body\" {service}{}",
        secrets.webhook,
        route::EMAIL_WEBHOOK.path
    );
    let _ = writeln!(out, "flip a switch live:");
    let _ = writeln!(
        out,
        "  curl -s -X PUT -H 'Authorization: Bearer {}' -H 'content-type: application/json' -d '{{\"INBOXXIA_EMAIL_SENT_ASYNC\": true}}' {service}/admin/flags",
        secrets.admin
    );
    out
}
