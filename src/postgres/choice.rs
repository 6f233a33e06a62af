//! Which backend a run gets: the `--postgres` choice, the request, and for `auto` the probe
//! that picks one and says why; plus the URL backend's helpers.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{docker, local, PgSettings, ProvisionError};

/// Where the harness gets its Postgres from (`--postgres`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresChoice {
    /// A URL if one is given (`DATABASE_URL`), else Docker if a daemon answers and the image is
    /// present, else a local cluster.
    Auto,
    /// An ephemeral cluster from the binaries on this machine.
    Local,
    /// A testcontainers Postgres.
    Docker,
    /// An existing server.
    Url(String),
}

impl FromStr for PostgresChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "local" => Ok(Self::Local),
            "docker" => Ok(Self::Docker),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Url(url.to_owned()))
            }
            other => Err(format!(
                "{other:?} is not a Postgres choice: expected auto, local, docker, or a postgres:// URL"
            )),
        }
    }
}

/// The backend a [`PgServer`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    Docker,
    Url,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Local => "local",
            Backend::Docker => "docker",
            Backend::Url => "url",
        })
    }
}

/// What [`PgServer::provision`] needs to know.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    pub choice: PostgresChoice,
    /// Directory holding `initdb` and `postgres` (local backend); searched when `None`.
    pub pg_bin: Option<PathBuf>,
    /// Image for the docker backend, `NAME:TAG`.
    pub pg_image: String,
    pub settings: PgSettings,
}

/// The image the docker backend uses unless told otherwise: public, for users with a registry.
pub const DEFAULT_PG_IMAGE: &str = "postgres:15-alpine";

pub(super) fn url_of(request: &ProvisionRequest) -> Option<String> {
    match &request.choice {
        PostgresChoice::Url(url) => Some(url.clone()),
        PostgresChoice::Auto => std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()),
        _ => None,
    }
}

pub(super) fn url_admin_options(url: &str) -> Result<PgConnectOptions, ProvisionError> {
    let masked = mask_url(url);
    url.parse::<PgConnectOptions>()
        .map_err(|e| ProvisionError::Url {
            url: masked,
            reason: format!("not a valid Postgres URL: {e}"),
        })
        // The harness makes its own databases; it connects to the maintenance one to do so.
        .map(|o| o.database("postgres"))
}

/// A URL with its password replaced by `****`, for messages and logs.
pub fn mask_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Decides the backend; for `auto`, probes in order and explains the pick.
pub(super) async fn choose(
    request: &ProvisionRequest,
) -> Result<(Backend, String), ProvisionError> {
    match &request.choice {
        PostgresChoice::Local => Ok((Backend::Local, "asked for local".into())),
        PostgresChoice::Docker => Ok((Backend::Docker, "asked for docker".into())),
        PostgresChoice::Url(url) => {
            probe_url(url).await?;
            Ok((Backend::Url, "asked for a URL".into()))
        }
        PostgresChoice::Auto => {
            if let Some(url) = url_of(request) {
                probe_url(&url).await?;
                return Ok((Backend::Url, "auto: DATABASE_URL is set".into()));
            }
            let docker = docker::probe(&request.pg_image).await;
            if docker.is_ok() {
                return Ok((
                    Backend::Docker,
                    format!(
                        "auto: Docker answers and image {} is present",
                        request.pg_image
                    ),
                ));
            }
            let docker_why = docker.unwrap_err();
            match local::find_bin_dir(request.pg_bin.as_deref()) {
                Ok(bin) => Ok((
                    Backend::Local,
                    format!(
                        "auto: no DATABASE_URL; docker not used ({docker_why}); Postgres binaries found in {}",
                        bin.display()
                    ),
                )),
                Err(local_why) => Err(ProvisionError::NoneAvailable {
                    tried: format!(
                        "no DATABASE_URL; docker: {docker_why}; local: {local_why}"
                    ),
                }),
            }
        }
    }
}

/// Connects once to a URL server so a bad URL fails early and clearly.
async fn probe_url(url: &str) -> Result<(), ProvisionError> {
    let opts = url_admin_options(url)?;
    let attempt = tokio::time::timeout(Duration::from_secs(10), opts.connect()).await;
    let fail = |reason: String| ProvisionError::Url {
        url: mask_url(url),
        reason,
    };
    match attempt {
        Err(_) => Err(fail("no answer within 10s".into())),
        Ok(Err(e)) => Err(fail(format!("cannot connect: {e}"))),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_choices_parse_and_bad_ones_name_the_options() {
        assert_eq!("auto".parse(), Ok(PostgresChoice::Auto));
        assert_eq!("local".parse(), Ok(PostgresChoice::Local));
        assert_eq!("docker".parse(), Ok(PostgresChoice::Docker));
        assert_eq!(
            "postgres://u@h/db".parse(),
            Ok(PostgresChoice::Url("postgres://u@h/db".into()))
        );
        let err = "mysql://h".parse::<PostgresChoice>().unwrap_err();
        assert!(err.contains("auto, local, docker"), "{err}");
    }

    #[test]
    fn passwords_never_appear_in_masked_urls() {
        let masked = mask_url("postgres://app:s3cret@db.example:5432/x");
        assert!(!masked.contains("s3cret"), "{masked}");
        assert!(masked.contains("****"), "{masked}");
    }
}
