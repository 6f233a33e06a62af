//! The generator and the harness over HTTPS: a target behind TLS (a CA and a certificate made
//! in the test with openssl, nothing fetched) is reached with `--ca-cert`; with another CA the
//! run stops at once naming the host (exit 3); `--insecure` reaches it and the report says the
//! certificate was not verified. And the reference service's stack behind TLS, its Postgres
//! with `ssl = on`: the run over HTTPS, its database read over TLS, checks exactly-once.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use axum::routing::get;
use common::scenarios::tiny_scenario;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A service that answers every request at once (with a /healthz and an empty /metrics),
/// behind TLS on a port of its own: returns `https://127.0.0.1:PORT`.
async fn service_behind_tls(dir: &Path) -> String {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "" }))
        .fallback(|| async { "ok" });
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = plain.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(plain, app).await });
    tls_front(dir, backend).await
}

/// A TLS front on a port of its own (the certificate in `dir`) for the plain server at
/// `backend`, as a platform's edge terminates TLS: returns `https://127.0.0.1:PORT`.
async fn tls_front(dir: &Path, backend: std::net::SocketAddr) -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", front.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = front.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    url
}

/// `run` of a 6-second scenario's `all-on` arm against `target`, with `extra` options.
async fn run(dir: &Path, target: &str, out: &str, extra: &[&str]) -> Output {
    let scenario = dir.join("tiny.toml");
    std::fs::write(&scenario, tiny_scenario(|s| s)).unwrap();
    let mut args: Vec<String> = ["run", scenario.to_str().unwrap(), "--arm", "all-on"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--target".into(), target.into(), "--out".into()]);
    args.push(dir.join(out).display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::against_target(&args).output().unwrap()
    })
    .await
    .unwrap()
}

fn report(dir: &Path, out: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("report.json")).unwrap())
        .unwrap()
}

/// Requests answered and failed (5xx, or no answer: a timeout, a broken connection), over
/// every endpoint of the run's one arm; a 3xx or 4xx (a signed-out browser) is an answer.
fn answered(report: &serde_json::Value) -> (u64, u64) {
    let mut ok = 0;
    let mut failed = 0;
    for e in report["arms"][0]["endpoints"].as_array().unwrap() {
        for (status, n) in e["status_counts"].as_object().unwrap() {
            let n = n.as_u64().unwrap();
            if status.starts_with(['2', '3', '4']) {
                ok += n;
            } else {
                failed += n;
            }
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_behind_tls_is_reached_with_its_ca_refused_with_another_and_insecure_is_said() {
    let dir = tempfile::tempdir().unwrap();
    common::certs::make(dir.path());
    let target = service_behind_tls(dir.path()).await;
    let ca = dir.path().join("ca.pem").display().to_string();
    let other = dir.path().join("other.pem").display().to_string();

    let trusted = run(dir.path(), &target, "trusted", &["--ca-cert", &ca]).await;
    let said = String::from_utf8_lossy(&trusted.stderr);
    let r = report(dir.path(), "trusted");
    let (ok, failed) = answered(&r);
    assert!(
        ok > 50 && failed == 0,
        "{ok} answered, {failed} failed: {said}"
    );
    assert!(
        !r["arms"][0]["skipped"].to_string().contains("certificate"),
        "{}",
        r["arms"][0]["skipped"]
    );
    // The connections' set-up (TCP and the TLS handshake) is measured apart, and said.
    let endpoints = r["arms"][0]["endpoints"].as_array().unwrap();
    let opened: u64 = endpoints
        .iter()
        .map(|e| e["connections"].as_u64().unwrap())
        .sum();
    assert!(opened > 0, "no connection set-up recorded");
    // The front offers no protocol by ALPN: HTTP/1.1, every connection counted and said.
    let load = &r["arms"][0]["load"];
    assert_eq!(
        load["connections"]["HTTP/1.1"].as_u64(),
        Some(opened),
        "{load}"
    );
    assert!(
        endpoints
            .iter()
            .filter(|e| e["connections"].as_u64().unwrap() > 0)
            .all(|e| e["connect_p95_ms"].as_f64().is_some_and(|p| p > 0.0)),
        "{endpoints:?}"
    );
    let md = std::fs::read_to_string(dir.path().join("trusted").join("report.md")).unwrap();
    assert!(
        md.contains("| connection set-up |") && md.contains(" new, p95 "),
        "{md}"
    );

    let started = std::time::Instant::now();
    let refused = run(dir.path(), &target, "refused", &["--ca-cert", &other]).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{said}");
    assert!(
        said.contains(&format!("cannot reach the target {target}")),
        "{said}"
    );
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    assert!(
        started.elapsed().as_secs() < 30,
        "a wrong CA took {:?}",
        started.elapsed()
    );

    let insecure = run(dir.path(), &target, "insecure", &["--insecure"]).await;
    let said = String::from_utf8_lossy(&insecure.stderr);
    let r = report(dir.path(), "insecure");
    let (ok, failed) = answered(&r);
    assert!(
        ok > 50 && failed == 0,
        "{ok} answered, {failed} failed: {said}"
    );
    let skipped = r["arms"][0]["skipped"].to_string();
    assert!(
        skipped.contains("the target's certificate verified") && skipped.contains("--insecure"),
        "{skipped}"
    );
}

/// `up`'s stack (service, fakes, a local Postgres) with the service behind a TLS front and its
/// Postgres switched to `ssl = on`: `run --target https://… --ca-cert` with `--database-url
/// …?sslmode=verify-full` passes, and its exactly-once check read the database over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_behind_tls_with_its_database_over_tls_is_checked_exactly_once() {
    let certs = tempfile::tempdir().unwrap();
    common::certs::make(certs.path());
    let out = tempfile::tempdir().unwrap();
    let smoke = common::scenarios::scenario_path("smoke.toml");
    let mut up = common::harness::Harness::start(&[
        "up",
        &smoke,
        "--arm",
        "all-on",
        "--postgres",
        "local",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let (cluster, _) = common::harness::cluster_of(&up.wait_for("data dir: "));
    up.wait_for("up; Ctrl-C");
    let printed = |prefix: &str| up.printed(prefix);
    let service: std::net::SocketAddr = printed("service:")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let database = printed("database:");
    let secrets: Vec<(String, String)> = ["WEBHOOK_SECRET", "SESSION_SECRET", "CRON_SECRET"]
        .iter()
        .map(|k| (k.to_string(), printed(&format!("{k}="))))
        .collect();

    // Postgres over TLS: its certificate beside its data, then `ssl = on`.
    common::certs::postgres_over_tls(&cluster, certs.path(), &database).await;
    let ca = certs.path().join("ca.pem").display().to_string();
    let sep = if database.contains('?') { '&' } else { '?' };
    let over_tls = format!("{database}{sep}sslmode=verify-full&sslrootcert={ca}");
    let mut ready = false;
    for _ in 0..50 {
        if incident_lab::matrix::target::connect(&over_tls)
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "Postgres never answered over TLS");

    let target = tls_front(certs.path(), service).await;
    let report_dir = out.path().join("run");
    let args: Vec<String> = [
        "run",
        &smoke,
        "--arm",
        "all-on",
        "--target",
        &target,
        "--ca-cert",
        &ca,
        "--database-url",
        &over_tls,
        "--out",
        report_dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::against_target(&args)
            .envs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    up.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(run.status.code(), Some(0), "{said}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    let once = r["arms"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "every acknowledged EMAIL_SENT applied exactly once")
        .unwrap_or_else(|| panic!("no exactly-once check: {}", r["arms"][0]["checks"]));
    assert_eq!(once["passed"], true, "{once}");
    let (ok, failed) = answered(&r);
    assert!(
        ok > 300 && failed == 0,
        "{ok} answered, {failed} failed: {said}"
    );
}
