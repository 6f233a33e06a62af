//! The constrained server configuration a scenario's `[postgres]` table and `db up`'s flags
//! ask for, applied by every backend.

use std::time::Duration;

use crate::units::{format_duration, parse_duration, MemSize};

/// The constrained server configuration (one type for the scenario file and the command line).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PgSettings {
    /// Server max_connections (Supabase Micro allows 60).
    #[serde(default = "default_max_connections")]
    #[arg(long, default_value_t = 60)]
    pub max_connections: u32,
    /// Default statement_timeout of the harness's databases, as Supabase sets one per role
    /// (`0`, or unset in a scenario: none), e.g. 8s.
    #[serde(default, with = "incident_wire::duration::option")]
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub statement_timeout: Option<Duration>,
    /// Server shared_buffers, e.g. 128MB.
    #[serde(default = "default_shared_buffers")]
    #[arg(long, default_value = "128MB")]
    pub shared_buffers: MemSize,
    /// Turn fsync and synchronous_commit on (off by default: faster, not crash-safe, as on a
    /// laptop).
    #[serde(default)]
    #[arg(long)]
    pub durable: bool,
    /// CPU limit in cores (docker backend only; the local and url backends say they cannot).
    #[serde(default)]
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory limit of the server, e.g. 1GB (docker backend only, as `cpus`).
    #[serde(default)]
    #[arg(long)]
    pub memory: Option<MemSize>,
}

fn default_max_connections() -> u32 {
    60
}

fn default_shared_buffers() -> MemSize {
    MemSize::mib(128)
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            statement_timeout: Some(Duration::from_secs(8)),
            shared_buffers: default_shared_buffers(),
            durable: false,
            cpus: None,
            memory: None,
        }
    }
}

impl PgSettings {
    /// The default statement timeout, `None` for none (`0` means none).
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout.filter(|d| !d.is_zero())
    }

    /// The server-level settings as `name=value` pairs, for `postgres -c`.
    pub fn server_settings(&self) -> Vec<(&'static str, String)> {
        let on_off = |b: bool| if b { "on" } else { "off" }.to_owned();
        vec![
            ("max_connections", self.max_connections.to_string()),
            ("shared_buffers", self.shared_buffers.to_string()),
            ("fsync", on_off(self.durable)),
            ("synchronous_commit", on_off(self.durable)),
            // Without fsync, torn-page protection buys nothing; with it, keep Postgres's default.
            ("full_page_writes", on_off(self.durable)),
        ]
    }

    /// `-c name=value` arguments for the `postgres` command line.
    pub fn server_args(&self) -> Vec<String> {
        self.server_settings()
            .into_iter()
            .flat_map(|(name, value)| ["-c".to_owned(), format!("{name}={value}")])
            .collect()
    }

    /// The container limits asked for, e.g. `cpus 2, memory 1024 MiB`; `None` when none is.
    pub fn limits(&self) -> Option<String> {
        let parts: Vec<String> = self
            .cpus
            .map(|c| format!("cpus {c}"))
            .into_iter()
            .chain(
                self.memory
                    .map(|m| format!("memory {} MiB", m.bytes() >> 20)),
            )
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// The value `SHOW statement_timeout` prints for this setting.
    pub fn statement_timeout_setting(&self) -> String {
        self.statement_timeout()
            .map(format_duration)
            .unwrap_or_else(|| "0".to_owned())
    }
}

/// `SHOW` prints sizes and booleans in its own units; compare what it means.
pub fn same_setting(actual: &str, wanted: &str) -> bool {
    if actual == wanted {
        return true;
    }
    match (actual.parse::<MemSize>(), wanted.parse::<MemSize>()) {
        (Ok(a), Ok(w)) => a == w,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args_carry_every_constrained_setting() {
        let settings = PgSettings {
            max_connections: 25,
            shared_buffers: MemSize::mib(64),
            durable: true,
            ..PgSettings::default()
        };
        let args = settings.server_args().join(" ");
        assert!(args.contains("-c max_connections=25"), "{args}");
        assert!(args.contains("-c shared_buffers=65536kB"), "{args}");
        assert!(args.contains("-c fsync=on"), "{args}");
        assert!(args.contains("-c synchronous_commit=on"), "{args}");
    }

    #[test]
    fn show_output_is_compared_by_meaning() {
        assert!(same_setting("128MB", "131072kB"));
        assert!(same_setting("off", "off"));
        assert!(!same_setting("100", "60"));
    }

    #[test]
    fn a_scenario_table_and_the_defaults_agree_except_the_timeout() {
        let read: PgSettings = toml::from_str("").unwrap();
        assert_eq!(
            read.statement_timeout(),
            None,
            "a scenario without one sets none"
        );
        assert_eq!(
            PgSettings {
                statement_timeout: Some(Duration::from_secs(8)),
                ..read
            },
            PgSettings::default()
        );
        let read: PgSettings =
            toml::from_str("statement_timeout = \"0\"\nshared_buffers = \"1GB\"").unwrap();
        assert_eq!(read.statement_timeout(), None);
        assert_eq!(read.shared_buffers, MemSize::mib(1024));
        assert!(toml::from_str::<PgSettings>("shared_buffer = \"1GB\"").is_err());
    }
}
