//! The docker backend as far as this machine allows: with no image present and no registry,
//! the failure must say what is missing and how to get past it.

mod common;

use incident_lab::postgres::{docker, PgServer, PgSettings, PostgresChoice, ProvisionRequest};

/// A missing image is named, with the ways around it (build/load, --pg-image, local).
#[tokio::test]
async fn a_missing_image_gives_a_clear_error() {
    let image = "incident-lab/absent-postgres:never";
    match docker::probe("hello-world:none").await {
        Err(why) if !why.contains("not present") => {
            eprintln!("skipped: no Docker daemon here ({why})");
            return;
        }
        _ => {}
    }
    let request = ProvisionRequest {
        choice: PostgresChoice::Docker,
        pg_bin: None,
        pg_image: image.to_owned(),
        settings: PgSettings::default(),
    };

    let err = PgServer::provision(&request).await.unwrap_err().to_string();

    assert!(err.contains(image), "{err}");
    assert!(err.contains("not present locally"), "{err}");
    assert!(err.contains("--pg-image"), "{err}");
    assert!(err.contains("--postgres local"), "{err}");
}

/// Runs `docker ARGS`; its stdout, trimmed, or the failure.
fn docker_cli(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A tiny image built here, offline: Debian's static busybox in a scratch image.
fn busybox_image() -> Result<&'static str, String> {
    const TAG: &str = "incident-lab/test-busybox:1";
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("no /bin/busybox (Debian's busybox-static; scripts/setup installs it)".into());
    }
    let ctx = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::copy(busybox, ctx.path().join("busybox")).map_err(|e| e.to_string())?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .map_err(|e| e.to_string())?;
    docker_cli(&["build", "-q", "-t", TAG, ctx.path().to_str().unwrap()])?;
    Ok(TAG)
}

/// A container an earlier run left when it died (its owner label names a process of this host
/// that is gone) is removed by the next run; one whose owner lives stays.
#[tokio::test]
async fn containers_left_by_a_dead_run_are_removed() {
    if let Err(why) = docker::probe("hello-world:none").await {
        if !why.contains("not present") {
            eprintln!(
                "skipped: containers_left_by_a_dead_run_are_removed: no Docker daemon ({why})"
            );
            return;
        }
    }
    let image = match busybox_image() {
        Ok(image) => image,
        Err(why) => {
            eprintln!("skipped: containers_left_by_a_dead_run_are_removed: {why}");
            return;
        }
    };
    let dead = common::dead_pid();
    let me = incident_lab::postgres::owner();
    let (host, _) = me.rsplit_once(':').unwrap();
    let run = |owner: String| {
        docker_cli(&[
            "run",
            "-d",
            "--label",
            &format!("{}={owner}", docker::OWNER_LABEL),
            image,
            "sleep",
            "300",
        ])
        .unwrap()
    };
    let orphan = run(format!("{host}:{dead}"));
    let mine = run(me.clone());

    let removed = docker::reap_leftover_containers().await.unwrap();

    let exists = |id: &str| docker_cli(&["inspect", "--format", "{{.Id}}", id]).is_ok();
    assert!(!exists(&orphan), "the orphan survived: {removed:?}");
    assert!(
        exists(&mine),
        "a live run's container was removed: {removed:?}"
    );
    assert!(
        removed
            .iter()
            .any(|r| r.contains(&format!("{host}:{dead}"))),
        "{removed:?}"
    );
    docker_cli(&["rm", "-f", &mine]).unwrap();
}
