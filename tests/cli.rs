//! The command line as a user meets it: help, exit codes, and a clean Ctrl-C.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{incident_lab, port_open, process_alive};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--help` lists the subcommands and explains the Postgres choice.
#[test]
fn help_lists_the_subcommands() {
    let top = incident_lab(&["--help"]);
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success());
    assert!(text.contains("db"), "{text}");

    let up = incident_lab(&["db", "up", "--help"]);
    let text = String::from_utf8_lossy(&up.stdout);
    assert!(
        text.contains("--postgres") && text.contains("DATABASE_URL"),
        "{text}"
    );
    assert!(text.contains("--scale"), "{text}");
}

/// A Postgres choice that is none of the four is bad usage: exit 2.
#[test]
fn an_unknown_postgres_choice_exits_2() {
    let out = incident_lab(&["db", "up", "--postgres", "mysql://localhost/x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("auto, local, docker"),
        "{}",
        stderr(&out)
    );
}

/// What only a run the harness starts can do (faults, flips, the service's access log) is bad
/// usage against a running service: exit 2, the flag named, before anything is sent.
#[test]
fn access_log_and_faults_need_a_service_the_harness_starts() {
    let scenario = common::scenarios::scenario_path("smoke.toml");
    for flag in [
        &["--access-log"][..],
        &["--fault", "at=1s,for=1s,kind=latency,latency=5ms"],
    ] {
        let mut args = vec![
            "run",
            &scenario,
            "--arm",
            "all-on",
            "--target",
            "http://127.0.0.1:9",
        ];
        args.extend_from_slice(flag);
        let out = incident_lab(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(flag[0]), "{}", stderr(&out));
    }
}

/// Nobody listening at the URL: infrastructure failure, exit 3, the address named.
#[test]
fn an_unreachable_url_exits_3() {
    let out = incident_lab(&["db", "up", "--postgres", "postgres://app:pw@127.0.0.1:1/db"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains(":pw@"),
        "password leaked: {}",
        stderr(&out)
    );
}

/// A server that is not Postgres (here: one answering HTTP) is an infrastructure failure.
#[test]
fn a_non_postgres_url_exits_3() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });

    let url = format!("postgres://app@127.0.0.1:{port}/db");
    let out = incident_lab(&["db", "up", "--postgres", &url]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

/// A --pg-bin without Postgres in it: exit 3, the directory named.
#[test]
fn a_missing_binary_dir_exits_3() {
    let out = incident_lab(&[
        "db",
        "up",
        "--postgres",
        "local",
        "--pg-bin",
        "/nonexistent/bin",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/bin"),
        "{}",
        stderr(&out)
    );
}

/// `db up` serves until Ctrl-C, then leaves no process, port or directory behind.
#[test]
fn db_up_cleans_up_after_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_incident-lab"))
        .args(["db", "up", "--postgres", "local", "--scale", "smoke"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut dir, mut pid, mut url) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("data dir: ") {
            let (d, p) = rest.split_once(" (postmaster pid ").unwrap();
            dir = Some(std::path::PathBuf::from(d));
            pid = Some(p.trim_end_matches(')').parse::<u32>().unwrap());
        }
        if let Some(u) = line.strip_prefix("url: ") {
            url = Some(u.to_owned());
        }
        if line.starts_with("ready;") {
            break;
        }
    }
    let (dir, pid, url) = (dir.unwrap(), pid.unwrap(), url.unwrap());
    let port: u16 = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(dir.exists() && process_alive(pid) && port_open(port));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "db up did not exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };

    assert!(status.success(), "{status}");
    assert!(!process_alive(pid), "postmaster {pid} survived Ctrl-C");
    assert!(!port_open(port));
    assert!(!dir.exists(), "{} survived Ctrl-C", dir.display());
}
