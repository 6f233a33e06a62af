//! The Kubernetes manifests as a user applies them (`deploy/k8s/render`): every render is a
//! run of its own (a fresh run id, a start time minutes from now), the image tag is pinned and
//! the pods pass the `restricted` Pod Security Standard. No cluster here: the text is read.

use std::process::Command;

/// One render's stdout (`args` passed to the script).
fn render(args: &[&str]) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s/render"))
        .args(args)
        .output()
        .expect("deploy/k8s/render runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the env entry `name` in a rendered manifest.
fn env_value(yaml: &str, name: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {name}"));
    lines
        .next()
        .unwrap_or_else(|| panic!("no env {name} in\n{yaml}"));
    let value = lines.next().unwrap().trim();
    value
        .strip_prefix("value: ")
        .unwrap_or_else(|| panic!("{name}: {value}"))
        .trim_matches('"')
        .to_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Two renders are two runs: their run ids differ, and each starts within minutes of now
/// (a manifest that fixed either would sleep for years or mix two runs' event ids).
#[test]
fn every_render_is_a_run_of_its_own_starting_minutes_from_now() {
    let (first, second) = (render(&[]), render(&[]));
    let (a, b) = (
        env_value(&first, "INCIDENT_LAB_RUN_ID"),
        env_value(&second, "INCIDENT_LAB_RUN_ID"),
    );
    assert_ne!(a, b, "a run id repeated across two renders");
    for yaml in [&first, &second] {
        let start: i64 = env_value(yaml, "INCIDENT_LAB_START_AT").parse().unwrap();
        let ahead = start - now();
        assert!((60..=300).contains(&ahead), "starts {ahead} s from now");
        assert!(!yaml.contains("__"), "a placeholder left:\n{yaml}");
    }
    let later: i64 = env_value(&render(&["--start-in", "600"]), "INCIDENT_LAB_START_AT")
        .parse()
        .unwrap();
    assert!((590..=610).contains(&(later - now())));
}

/// Every container of the shards and the merge: a pinned tag (not `latest`) and the
/// `restricted` profile's fields.
#[test]
fn the_pods_are_pinned_and_restricted() {
    let version = env!("CARGO_PKG_VERSION");
    for yaml in [render(&[]), render(&["--merge"])] {
        assert!(
            yaml.contains(&format!("image: incident-lab/incident-lab:{version}")),
            "{yaml}"
        );
        assert!(!yaml.contains(":latest"), "{yaml}");
        for field in [
            "runAsNonRoot: true",
            "allowPrivilegeEscalation: false",
            "drop: [\"ALL\"]",
            "type: RuntimeDefault",
        ] {
            assert!(yaml.contains(field), "no {field}:\n{yaml}");
        }
    }
}

/// The shipped template applied without rendering is refused by the harness at once (its
/// start time is not a number), and a start time rendered long ago for far ahead is refused
/// too: a shard never sleeps until a stale time.
#[test]
fn an_unrendered_or_far_start_time_is_refused_at_once() {
    let bin = env!("CARGO_BIN_EXE_incident-lab");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/smoke.toml");
    let run = |start_at: &str| {
        Command::new(bin)
            .args(["run", scenario, "--arm", "all-on"])
            .args(["--target", "http://127.0.0.1:9", "--start-at", start_at])
            .env("WEBHOOK_SECRET", "w")
            .env("SESSION_SECRET", "s")
            .env("CRON_SECRET", "c")
            .output()
            .unwrap()
    };
    let placeholder = run("__START_AT__");
    assert_eq!(placeholder.status.code(), Some(2));
    let far = run(&(now() + 3 * 3600).to_string());
    assert_eq!(far.status.code(), Some(2));
    let text = String::from_utf8_lossy(&far.stderr);
    assert!(text.contains("more than the 900 s a shard waits"), "{text}");
}
