//! The local backend: an ephemeral cluster from the Postgres binaries on this machine.
//!
//! `initdb` and `postgres` run as the `postgres` user when the harness is root (Postgres
//! refuses root), in a temp directory handed to that user, on a free loopback port, with the
//! unix socket in the temp dir. The postmaster gets its own process group so a terminal's
//! Ctrl-C reaches the harness, which then shuts Postgres down in order. Dropping the
//! [`LocalCluster`] stops the server and removes the directory — also during a panic.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;

use super::{PgSettings, ProvisionError};

/// How long a fresh cluster may take to accept connections before the harness gives up.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take before the postmaster is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Finds a directory with `initdb` and `postgres`: `explicit` if given, else on `PATH`, else
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = explicit {
        return if has_binaries(dir) {
            Ok(dir.to_owned())
        } else {
            Err(format!(
                "--pg-bin {}: no initdb and postgres binaries there",
                dir.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(dir) = on_path.into_iter().find(|d| has_binaries(d)) {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_binaries(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin (install the PostgreSQL server package, or pass --pg-bin DIR)".to_owned()
    })
}

/// The user the server processes run as: `postgres` when we are root, else ourselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    switch: bool,
}

pub(crate) fn run_as() -> Result<RunAs, ProvisionError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(RunAs {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            switch: false,
        });
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            switch: true,
        }),
        _ => Err(ProvisionError::local(
            "running as root, and Postgres refuses root: create a 'postgres' user (the server package does) or run the harness as another user",
        )),
    }
}

impl RunAs {
    pub(crate) fn command(&self, program: PathBuf) -> Command {
        let mut cmd = crate::service_proc::niced(program);
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
        cmd.env("LC_ALL", "C").env_remove("PGDATA");
        cmd
    }
}

/// A running ephemeral cluster. Dropping it stops the server and removes its directory.
#[derive(Debug)]
pub struct LocalCluster {
    dir: Option<TempDir>,
    child: Option<Child>,
    port: u16,
    pid: u32,
    /// Keeps the backends' autogroups below the harness (see [`super::autogroup`]).
    autogroup: Option<super::autogroup::Sweeper>,
}

impl LocalCluster {
    /// Initialises and starts a cluster with `settings`, waiting until it accepts connections.
    pub async fn start(bin: &Path, settings: &PgSettings) -> Result<Self, ProvisionError> {
        let bin = bin.to_owned();
        let settings = settings.clone();
        let mut cluster = tokio::task::spawn_blocking(move || Self::spawn(&bin, &settings))
            .await
            .map_err(ProvisionError::local_by("start task failed"))??;
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(bin: &Path, settings: &PgSettings) -> Result<Self, ProvisionError> {
        let who = run_as()?;
        for gone in reap_leftovers() {
            eprintln!("cleanup: removed a Postgres cluster an earlier run left behind: {gone}");
        }
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(ProvisionError::local_by("cannot create a temp dir"))?;
        // Who owns it: a later run removes it if this process dies without cleaning up.
        fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(ProvisionError::local_by("cannot write the owner marker"))?;
        chown(dir.path(), Some(who.uid), Some(who.gid)).map_err(|e| {
            ProvisionError::local_by(format!(
                "cannot hand {} to the postgres user",
                dir.path().display()
            ))(e)
        })?;
        if let Some(limits) = settings.limits() {
            tracing::warn!(
                %limits,
                "the local backend cannot limit CPU or memory: these apply to --postgres docker only"
            );
        }
        let data = dir.path().join("data");
        let init = who
            .command(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                ProvisionError::local_by(format!("cannot run {}/initdb", bin.display()))(e)
            })?;
        if !init.status.success() {
            return Err(ProvisionError::local(format!(
                "initdb failed ({}): {}",
                init.status,
                String::from_utf8_lossy(&init.stderr).trim()
            )));
        }
        let port = free_port()?;
        let log = fs::File::create(dir.path().join("postgres.log"))
            .map_err(ProvisionError::local_by("cannot create the server log"))?;
        chown(
            dir.path().join("postgres.log"),
            Some(who.uid),
            Some(who.gid),
        )
        .ok();
        let child = who
            .command(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Seeding writes gigabytes of WAL: avoid checkpoints in the middle of it.
            .args(["-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=30min"])
            .args(settings.server_args())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(ProvisionError::local_by("cannot share the server log"))?,
            )
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C goes to the harness, not to Postgres.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ProvisionError::local_by(format!("cannot run {}/postgres", bin.display()))(e)
            })?;
        crate::interrupt::register_child(
            child.id(),
            format!("postgres ({})", dir.path().display()),
        );
        let nice = crate::service_proc::SUT_NICE.parse().unwrap_or(10);
        Ok(Self {
            pid: child.id(),
            autogroup: super::autogroup::Sweeper::start(child.id(), nice),
            child: Some(child),
            dir: Some(dir),
            port,
        })
    }

    async fn wait_ready(&mut self) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(ProvisionError::local(format!(
                    "postgres exited ({status}) before accepting connections:\n{}",
                    self.log_tail()
                )));
            }
            match self.admin_options().connect().await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                Err(e) => {
                    return Err(ProvisionError::local(format!(
                        "not accepting connections after {READY_DEADLINE:?} ({e}):\n{}",
                        self.log_tail()
                    )))
                }
            }
        }
    }

    /// Connection options for the maintenance database, over TCP on loopback.
    pub fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The cluster's temp directory (data, socket and log); gone after [`Self::stop`].
    pub fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Some(dir) = &self.dir {
            if let Ok(mut f) = fs::File::open(dir.path().join("postgres.log")) {
                let _ = f.read_to_string(&mut text);
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fast shutdown (SIGINT), then SIGKILL past the deadline; removes the directory. Idempotent.
    pub fn stop(&mut self) {
        self.autogroup = None;
        if let Some(mut child) = self.child.take() {
            let _unregister = Unregister(self.pid);
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGINT);
            let deadline = Instant::now() + STOP_DEADLINE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        tracing::warn!(pid = self.pid, "postgres did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove the cluster directory");
            }
        }
    }
}

/// Forgets a child once its stop is done, however it ends.
struct Unregister(u32);

impl Drop for Unregister {
    fn drop(&mut self) {
        crate::interrupt::unregister_child(self.0);
    }
}

/// Prefix of the clusters' temp directories.
const DIR_PREFIX: &str = "incident-lab-pg-";
/// File in a cluster's directory holding the pid of the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Removes clusters an earlier run left behind (it was killed before it could clean up): a
/// cluster directory whose owner process is gone has its postmaster stopped (immediate
/// shutdown, then SIGKILL) and is deleted. Directories without an owner marker, or whose owner
/// lives, are left alone. Returns what it removed.
pub fn reap_leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Some(owner) = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if crate::interrupt::alive(owner) {
            continue;
        }
        let postmaster = fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok());
        if let Some(pm) = postmaster.filter(|pm| crate::interrupt::alive(*pm)) {
            let _ = kill(Pid::from_raw(pm as i32), Signal::SIGQUIT);
            let deadline = Instant::now() + STOP_DEADLINE;
            while crate::interrupt::alive(pm) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if crate::interrupt::alive(pm) {
                let _ = kill(Pid::from_raw(pm as i32), Signal::SIGKILL);
            }
        }
        if fs::remove_dir_all(&dir).is_ok() {
            removed.push(format!(
                "{} (owner pid {owner} gone{})",
                dir.display(),
                postmaster.map_or(String::new(), |p| format!(", postmaster pid {p} stopped"))
            ));
        }
    }
    removed
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on loopback (the OS picks; the tiny race with another process is accepted).
pub(crate) fn free_port() -> Result<u16, ProvisionError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(ProvisionError::local_by("no free port on 127.0.0.1"))
}
