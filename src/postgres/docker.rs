//! The docker backend: a testcontainers Postgres from a configurable image.
//!
//! The default image is public (for users with a registry); on an offline machine, point
//! `--pg-image` (or `INCIDENT_LAB_PG_IMAGE`) at a locally built one — testcontainers only pulls
//! when the image is missing, so a local tag works with no registry at all.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use testcontainers::bollard::Docker;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, ImageExt};
use testcontainers_modules::postgres::Postgres;

use super::{PgSettings, ProvisionError};

/// The container's superuser password (an ephemeral, loopback-only server).
pub const PASSWORD: &str = "postgres";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Splits `NAME[:TAG]` (the name may carry a registry port, e.g. `localhost:5000/pg:15`).
pub fn split_image(image: &str) -> Result<(String, String), String> {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match image[slash..].rfind(':') {
        Some(i) => (&image[..slash + i], &image[slash + i + 1..]),
        None => (image, "latest"),
    };
    if name.is_empty() || tag.is_empty() || image.contains(char::is_whitespace) {
        return Err(format!(
            "{image:?} is not an image reference: expected NAME:TAG"
        ));
    }
    Ok((name.to_owned(), tag.to_owned()))
}

/// The container the harness asks Docker for: image, the scenario's server settings as the
/// command (replacing the module's `-c fsync=off`), a CPU limit if asked, room in /dev/shm.
pub fn container_request(
    image: &str,
    settings: &PgSettings,
) -> Result<ContainerRequest<Postgres>, String> {
    let (name, tag) = split_image(image)?;
    let mut request = Postgres::default()
        .with_password(PASSWORD)
        .with_name(name)
        .with_tag(tag)
        .with_cmd(settings.server_args())
        .with_shm_size(256 * 1024 * 1024)
        .with_label("dev.incident-lab", "postgres")
        .with_label(OWNER_LABEL, super::owner())
        .with_startup_timeout(Duration::from_secs(60));
    if settings.cpus.is_some() || settings.memory.is_some() {
        let nano_cpus = settings.cpus.map(|c| (c * 1e9) as i64);
        let memory = settings.memory.map(|m| m.bytes() as i64);
        request = request.with_host_config_modifier(move |hc| {
            hc.nano_cpus = nano_cpus;
            hc.memory = memory;
            // No swap beyond the limit: a database squeezed for memory must show it.
            hc.memory_swap = memory;
        });
    }
    Ok(request)
}

/// Label naming the process that owns a container (`HOST:PID`): a later run removes the
/// container when that process is gone.
pub const OWNER_LABEL: &str = "dev.incident-lab.owner";

/// Removes containers an earlier run on this host left when it died (their owner process is
/// gone); containers of live runs or of other hosts are left alone. Returns their names.
pub async fn reap_leftover_containers() -> Result<Vec<String>, String> {
    use std::collections::HashMap;
    use testcontainers::bollard::query_parameters::{
        ListContainersOptions, RemoveContainerOptions,
    };

    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("no Docker daemon configured ({e})"))?;
    let filters = HashMap::from([("label".to_owned(), vec![OWNER_LABEL.to_owned()])]);
    let listed = tokio::time::timeout(
        PROBE_TIMEOUT,
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        })),
    )
    .await
    .map_err(|_| "the Docker daemon did not list containers within 3s".to_owned())?
    .map_err(|e| format!("cannot list containers: {e}"))?;
    let mut removed = Vec::new();
    for c in listed {
        let owner = c.labels.as_ref().and_then(|l| l.get(OWNER_LABEL));
        let (Some(id), Some(owner)) = (c.id.as_deref(), owner) else {
            continue;
        };
        if !super::owner_is_gone(owner) {
            continue;
        }
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| id.chars().take(12).collect());
        docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| format!("cannot remove container {name}: {e}"))?;
        removed.push(format!("{name} (owner {owner} gone)"));
    }
    Ok(removed)
}

/// Checks that a Docker daemon answers and `image` is present locally.
pub async fn probe(image: &str) -> Result<(), String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("no Docker daemon configured ({e})"))?;
    match tokio::time::timeout(PROBE_TIMEOUT, docker.ping()).await {
        Err(_) => return Err("the Docker daemon did not answer within 3s".into()),
        Ok(Err(e)) => return Err(format!("the Docker daemon did not answer ({e})")),
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout(PROBE_TIMEOUT, docker.inspect_image(image)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(format!(
            "image {image} is not present locally (pull or build it, or choose one with --pg-image)"
        )),
        Err(_) => Err("the Docker daemon did not answer an image query within 3s".into()),
    }
}

/// A running Postgres container; dropping it removes the container.
pub struct DockerPostgres {
    container: ContainerAsync<Postgres>,
    port: u16,
    limits: String,
}

/// The limits Docker applied to container `id`, read back from it: e.g. `cpus 2, memory 1024
/// MiB`, or `none`.
async fn read_limits(id: &str) -> Result<String, String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("no Docker daemon configured ({e})"))?;
    let inspected = tokio::time::timeout(PROBE_TIMEOUT, docker.inspect_container(id, None))
        .await
        .map_err(|_| "the Docker daemon did not answer within 3s".to_owned())?
        .map_err(|e| format!("cannot inspect container {id}: {e}"))?;
    let host = inspected.host_config.unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(n) = host.nano_cpus.filter(|n| *n > 0) {
        parts.push(format!("cpus {}", n as f64 / 1e9));
    }
    if let Some(m) = host.memory.filter(|m| *m > 0) {
        parts.push(format!("memory {} MiB", m >> 20));
    }
    Ok(if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    })
}

impl DockerPostgres {
    /// Starts the container and waits until the server accepts connections.
    pub async fn start(image: &str, settings: &PgSettings) -> Result<Self, ProvisionError> {
        let request = container_request(image, settings).map_err(ProvisionError::docker)?;
        match reap_leftover_containers().await {
            Ok(removed) => {
                for c in removed {
                    eprintln!("cleanup: removed container {c}, left by an earlier run that died");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for leftover containers"),
        }
        let present = probe(image).await;
        let container = request.start().await.map_err(|e| {
            let hint = match &present {
                Err(why) if why.contains("not present") => format!(
                    "image {image} is not present locally and could not be pulled ({e}). Build or load it (docker build / docker load), pick another with --pg-image or INCIDENT_LAB_PG_IMAGE, or use --postgres local"
                ),
                Err(why) => format!("{why}; starting the container failed: {e}"),
                Ok(()) => format!("starting the container from {image} failed: {e}"),
            };
            ProvisionError::docker(hint)
        })?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(ProvisionError::docker_by("no host port for 5432"))?;
        let limits = read_limits(container.id())
            .await
            .map_err(ProvisionError::docker)?;
        if let Some(asked) = settings.limits() {
            if limits != asked {
                return Err(ProvisionError::docker(format!(
                    "asked Docker for {asked} but the container has {limits}"
                )));
            }
        }
        let pg = Self {
            container,
            port,
            limits,
        };
        pg.wait_ready().await?;
        Ok(pg)
    }

    async fn wait_ready(&self) -> Result<(), ProvisionError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.admin_options().connect().await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    return Err(ProvisionError::docker_by(
                        "container not accepting connections",
                    )(e))
                }
            }
        }
    }

    /// Connection options for the maintenance database.
    pub fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .password(PASSWORD)
            .database("postgres")
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// The CPU and memory limits read back from the container (`none` when unlimited).
    pub fn limits(&self) -> &str {
        &self.limits
    }

    /// Stops and removes the container.
    pub async fn stop(self) {
        if let Err(e) = self.container.rm().await {
            tracing::warn!(error = %e, "could not remove the Postgres container");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testcontainers::bollard::models::HostConfig;

    #[test]
    fn image_references_split_into_name_and_tag() {
        assert_eq!(
            split_image("postgres:15-alpine"),
            Ok(("postgres".into(), "15-alpine".into()))
        );
        assert_eq!(
            split_image("localhost:5000/pg:15"),
            Ok(("localhost:5000/pg".into(), "15".into()))
        );
        assert_eq!(
            split_image("incident-lab/postgres"),
            Ok(("incident-lab/postgres".into(), "latest".into()))
        );
        assert!(split_image("postgres:").is_err());
        assert!(split_image("bad image:1").is_err());
    }

    #[test]
    fn the_container_carries_image_settings_and_limits() {
        let settings = PgSettings {
            max_connections: 30,
            cpus: Some(1.5),
            memory: Some(crate::units::MemSize::mib(512)),
            ..PgSettings::default()
        };
        let request = container_request("incident-lab/postgres:15", &settings).unwrap();

        assert_eq!(request.descriptor(), "incident-lab/postgres:15");
        let cmd: Vec<String> = request.cmd().map(|c| c.into_owned()).collect();
        assert!(cmd.contains(&"max_connections=30".to_owned()), "{cmd:?}");
        assert!(cmd.contains(&"fsync=off".to_owned()), "{cmd:?}");
        let mut host = HostConfig::default();
        (request.host_config_modifier().expect("cpu limit set"))(&mut host);
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(512 << 20));
        assert_eq!(host.memory_swap, Some(512 << 20));
        assert_eq!(request.shm_size(), Some(256 * 1024 * 1024));
    }

    #[test]
    fn no_cpu_limit_leaves_the_host_config_alone() {
        let request = container_request("postgres:15", &PgSettings::default()).unwrap();
        assert!(request.host_config_modifier().is_none());
    }
}
