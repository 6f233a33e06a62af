//! Typed configuration, read once from the environment and validated.
//!
//! Rollout flags use exactly the seed's names and default off, as the rollout deploys them.
//! Legacy switches reproduce the pre-Phase-53 behaviour of the unflagged fixes and default to
//! the fixed behaviour. Durations are whole milliseconds in variables ending `_MS`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that could not be used; names the variable, the value and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

/// Every run-time switch of the service: the rollout flags and the legacy switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Switches {
    /// `INBOXXIA_EMAIL_SENT_ASYNC`: EMAIL_SENT is one job insert; the worker applies it.
    pub email_sent_async: bool,
    /// `INBOX_COUNTS_CACHE_FALLBACK`: bounded live counts, stale cached counts on timeout.
    pub counts_cache_fallback: bool,
    /// `UNIPILE_HEALTH_GATE`: no LinkedIn sends for disconnected workspaces.
    pub unipile_health_gate: bool,
    /// `LOG_SLOW_PATHS`: step-level timing logs.
    pub log_slow_paths: bool,
    /// `LEGACY_AUTH_NOISE`: expected-unauthenticated requests logged at ERROR.
    pub legacy_auth_noise: bool,
    /// `LEGACY_AI_VERIFIER`: the step-3 verifier awaited without a bound.
    pub legacy_ai_verifier: bool,
    /// `LEGACY_LEDGER_TX`: the slot ledger increment as an interactive transaction.
    pub legacy_ledger_tx: bool,
    /// `LEGACY_PROVIDER_CALLS`: GHL calls with no timeout, no classification, no backoff.
    pub legacy_provider_calls: bool,
}

impl Switches {
    /// Every switch name, in the order they are listed and exported.
    pub const NAMES: [&'static str; 8] = [
        "INBOXXIA_EMAIL_SENT_ASYNC",
        "INBOX_COUNTS_CACHE_FALLBACK",
        "UNIPILE_HEALTH_GATE",
        "LOG_SLOW_PATHS",
        "LEGACY_AUTH_NOISE",
        "LEGACY_AI_VERIFIER",
        "LEGACY_LEDGER_TX",
        "LEGACY_PROVIDER_CALLS",
    ];

    /// The three rollout flags (the seed's plan flips these in production).
    pub const ROLLOUT: [&'static str; 3] = [Self::NAMES[0], Self::NAMES[1], Self::NAMES[2]];

    /// The pre-Phase-53 world: every flag off, every legacy switch on.
    pub fn pre_phase_53() -> Self {
        Self {
            legacy_auth_noise: true,
            legacy_ai_verifier: true,
            legacy_ledger_tx: true,
            legacy_provider_calls: true,
            ..Self::default()
        }
    }

    /// Every fix on (the three rollout flags on, unflagged fixes on, slow-path logs off).
    pub fn all_fixed() -> Self {
        Self {
            email_sent_async: true,
            counts_cache_fallback: true,
            unipile_health_gate: true,
            ..Self::default()
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "INBOXXIA_EMAIL_SENT_ASYNC" => &mut self.email_sent_async,
            "INBOX_COUNTS_CACHE_FALLBACK" => &mut self.counts_cache_fallback,
            "UNIPILE_HEALTH_GATE" => &mut self.unipile_health_gate,
            "LOG_SLOW_PATHS" => &mut self.log_slow_paths,
            "LEGACY_AUTH_NOISE" => &mut self.legacy_auth_noise,
            "LEGACY_AI_VERIFIER" => &mut self.legacy_ai_verifier,
            "LEGACY_LEDGER_TX" => &mut self.legacy_ledger_tx,
            "LEGACY_PROVIDER_CALLS" => &mut self.legacy_provider_calls,
            _ => return None,
        })
    }

    /// Sets switch `name`; `Err` names the switches that exist.
    pub fn set(&mut self, name: &str, value: bool) -> Result<(), String> {
        match self.slot(name) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(format!(
                "unknown switch {name:?}; known: {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// Name → value, for the admin route, `/metrics` and reports.
    pub fn to_map(self) -> BTreeMap<&'static str, bool> {
        let mut copy = self;
        Self::NAMES
            .iter()
            .map(|&n| (n, *copy.slot(n).expect("NAMES are all known")))
            .collect()
    }
}

/// Reads a boolean: `1`/`true`/`on`/`yes` or `0`/`false`/`off`/`no`.
pub fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" | "" => Ok(false),
        _ => Err(ConfigError {
            var: var.to_owned(),
            value: value.to_owned(),
            reason: "expected 1/0, true/false, on/off or yes/no".to_owned(),
        }),
    }
}

/// Pool and platform limits: the model of production's small pool and 60 s function limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `DB_POOL_MAX`: pool size.
    pub pool_max: u32,
    /// `DB_ACQUIRE_TIMEOUT_MS`: how long a request waits for a connection.
    pub acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: per-connection statement timeout (unset: the database's).
    pub statement_timeout: Option<Duration>,
    /// `REQUEST_TIMEOUT_MS`: the platform's function limit; past it the client gets 504.
    pub request_timeout: Duration,
    /// `COUNTS_QUERY_TIMEOUT_MS`: `SET LOCAL statement_timeout` of the fixed live counts query.
    pub counts_query_timeout: Duration,
    /// `COUNTS_CACHE_TTL_MS`: cached counts younger than this are served without a live query.
    pub counts_cache_ttl: Duration,
    /// `AI_VERIFY_BUDGET_MS`: the fixed verifier's time budget.
    pub ai_verify_budget: Duration,
    /// `PROVIDER_TIMEOUT_MS`: timeout of a fixed provider call.
    pub provider_timeout: Duration,
    /// `PROVIDER_MAX_ATTEMPTS`: attempts of a fixed provider call (retryable errors only).
    pub provider_max_attempts: u32,
    /// `PROVIDER_BACKOFF_MS`: base of the exponential backoff between attempts (with jitter).
    pub provider_backoff: Duration,
    /// `CRON_BATCH_LIMIT`: most units one cron tick handles.
    pub cron_batch_limit: u32,
    /// `CRON_TIME_BUDGET_MS`: a cron tick stops claiming work after this long (keep it below
    /// the function limit).
    pub cron_time_budget: Duration,
    /// `WORKER_CONCURRENCY`: jobs a background-jobs tick runs at once.
    pub worker_concurrency: u32,
    /// `JOB_LEASE_MS`: a claimed job is handed to another worker once its lease expires.
    pub job_lease: Duration,
    /// `JOB_MAX_ATTEMPTS` / `FOLLOWUP_MAX_ATTEMPTS`: attempts before a unit is failed for good.
    pub max_attempts: u32,
    /// `WEBHOOK_TOLERANCE_MS`: how old a signed webhook timestamp may be.
    pub webhook_tolerance: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pool_max: 10,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: None,
            request_timeout: Duration::from_secs(60),
            counts_query_timeout: Duration::from_millis(1500),
            counts_cache_ttl: Duration::from_secs(30),
            ai_verify_budget: Duration::from_secs(2),
            provider_timeout: Duration::from_secs(2),
            provider_max_attempts: 3,
            provider_backoff: Duration::from_millis(100),
            cron_batch_limit: 200,
            cron_time_budget: Duration::from_secs(10),
            worker_concurrency: 4,
            job_lease: Duration::from_secs(30),
            max_attempts: 5,
            webhook_tolerance: Duration::from_secs(300),
        }
    }
}

/// Secrets; never logged (Debug is redacted).
#[derive(Clone)]
pub struct Secrets {
    /// `WEBHOOK_SECRET`: HMAC key of the email provider's webhooks.
    pub webhook: String,
    /// `CRON_SECRET`: bearer token of the cron routes.
    pub cron: String,
    /// `ADMIN_TOKEN`: bearer token of `/admin/flags`.
    pub admin: String,
    /// `SESSION_SECRET`: HMAC key of session and refresh tokens.
    pub session: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { <redacted> }")
    }
}

/// Base URLs of the external providers (fakes on loopback in the harness).
#[derive(Debug, Clone)]
pub struct ProviderUrls {
    /// `GHL_BASE_URL`
    pub ghl: String,
    /// `UNIPILE_BASE_URL`
    pub unipile: String,
    /// `AI_BASE_URL`
    pub ai: String,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BIND`: listen address (port 0 picks a free one).
    pub bind: SocketAddr,
    /// `DATABASE_URL`
    pub database_url: String,
    pub switches: Switches,
    pub limits: Limits,
    pub secrets: Secrets,
    pub providers: ProviderUrls,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |var: &str| {
            get(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError {
                    var: var.to_owned(),
                    value: String::new(),
                    reason: "required and not set".to_owned(),
                })
        };
        let parsed = |var: &str, default: u64| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError {
                    var: var.to_owned(),
                    value: v.clone(),
                    reason: "expected a whole number".to_owned(),
                }),
            }
        };
        let ms = |var: &str, default: Duration| {
            parsed(var, default.as_millis() as u64).map(Duration::from_millis)
        };
        let mut switches = Switches::default();
        for name in Switches::NAMES {
            if let Some(v) = get(name) {
                switches
                    .set(name, parse_bool(name, &v)?)
                    .expect("NAMES are known");
            }
        }
        let d = Limits::default();
        let limits = Limits {
            pool_max: positive("DB_POOL_MAX", parsed("DB_POOL_MAX", d.pool_max.into())?)?,
            acquire_timeout: ms("DB_ACQUIRE_TIMEOUT_MS", d.acquire_timeout)?,
            statement_timeout: match get("DB_STATEMENT_TIMEOUT_MS") {
                None => None,
                Some(_) => Some(ms("DB_STATEMENT_TIMEOUT_MS", Duration::ZERO)?),
            },
            request_timeout: ms("REQUEST_TIMEOUT_MS", d.request_timeout)?,
            counts_query_timeout: ms("COUNTS_QUERY_TIMEOUT_MS", d.counts_query_timeout)?,
            counts_cache_ttl: ms("COUNTS_CACHE_TTL_MS", d.counts_cache_ttl)?,
            ai_verify_budget: ms("AI_VERIFY_BUDGET_MS", d.ai_verify_budget)?,
            provider_timeout: ms("PROVIDER_TIMEOUT_MS", d.provider_timeout)?,
            provider_max_attempts: positive(
                "PROVIDER_MAX_ATTEMPTS",
                parsed("PROVIDER_MAX_ATTEMPTS", d.provider_max_attempts.into())?,
            )?,
            provider_backoff: ms("PROVIDER_BACKOFF_MS", d.provider_backoff)?,
            cron_batch_limit: positive(
                "CRON_BATCH_LIMIT",
                parsed("CRON_BATCH_LIMIT", d.cron_batch_limit.into())?,
            )?,
            cron_time_budget: ms("CRON_TIME_BUDGET_MS", d.cron_time_budget)?,
            worker_concurrency: positive(
                "WORKER_CONCURRENCY",
                parsed("WORKER_CONCURRENCY", d.worker_concurrency.into())?,
            )?,
            job_lease: ms("JOB_LEASE_MS", d.job_lease)?,
            max_attempts: positive(
                "JOB_MAX_ATTEMPTS",
                parsed("JOB_MAX_ATTEMPTS", d.max_attempts.into())?,
            )?,
            webhook_tolerance: ms("WEBHOOK_TOLERANCE_MS", d.webhook_tolerance)?,
        };
        let bind_text = get("BIND").unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        let bind = SocketAddr::from_str(&bind_text).map_err(|_| ConfigError {
            var: "BIND".to_owned(),
            value: bind_text.clone(),
            reason: "expected HOST:PORT, e.g. 127.0.0.1:0".to_owned(),
        })?;
        Ok(Self {
            bind,
            database_url: required("DATABASE_URL")?,
            switches,
            limits,
            secrets: Secrets {
                webhook: required("WEBHOOK_SECRET")?,
                cron: required("CRON_SECRET")?,
                admin: required("ADMIN_TOKEN")?,
                session: required("SESSION_SECRET")?,
            },
            providers: ProviderUrls {
                ghl: required("GHL_BASE_URL")?,
                unipile: required("UNIPILE_BASE_URL")?,
                ai: required("AI_BASE_URL")?,
            },
        })
    }
}

fn positive(var: &str, value: u64) -> Result<u32, ConfigError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ConfigError {
            var: var.to_owned(),
            value: value.to_string(),
            reason: "expected a whole number from 1 to 4294967295".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("WEBHOOK_SECRET", "w"),
            ("CRON_SECRET", "c"),
            ("ADMIN_TOKEN", "a"),
            ("SESSION_SECRET", "s"),
            ("GHL_BASE_URL", "http://127.0.0.1:1/ghl"),
            ("UNIPILE_BASE_URL", "http://127.0.0.1:1/unipile"),
            ("AI_BASE_URL", "http://127.0.0.1:1/ai"),
        ])
    }

    fn read(env: &HashMap<&str, &str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| env.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn rollout_flags_default_off_and_legacy_switches_default_fixed() {
        let config = read(&base()).unwrap();
        assert_eq!(config.switches, Switches::default());
        assert!(config.switches.to_map().values().all(|on| !on));
    }

    #[test]
    fn flags_are_read_under_the_seed_names() {
        let mut env = base();
        env.insert("INBOXXIA_EMAIL_SENT_ASYNC", "1");
        env.insert("INBOX_COUNTS_CACHE_FALLBACK", "true");
        env.insert("UNIPILE_HEALTH_GATE", "on");
        let s = read(&env).unwrap().switches;
        assert!(s.email_sent_async && s.counts_cache_fallback && s.unipile_health_gate);
        assert!(!s.log_slow_paths);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let mut env = base();
        env.insert("UNIPILE_HEALTH_GATE", "maybe");
        let err = read(&env).unwrap_err();
        assert_eq!(err.var, "UNIPILE_HEALTH_GATE");
        assert_eq!(err.value, "maybe");

        let mut env = base();
        env.insert("DB_POOL_MAX", "0");
        assert_eq!(read(&env).unwrap_err().var, "DB_POOL_MAX");

        let mut env = base();
        env.remove("WEBHOOK_SECRET");
        assert_eq!(
            read(&env).unwrap_err().to_string(),
            "WEBHOOK_SECRET=\"\": required and not set"
        );
    }

    #[test]
    fn switches_flip_by_name_and_unknown_names_are_refused() {
        let mut s = Switches::default();
        s.set("LEGACY_LEDGER_TX", true).unwrap();
        assert!(s.legacy_ledger_tx);
        assert!(s
            .set("INBOX_COUNTS", true)
            .unwrap_err()
            .contains("INBOX_COUNTS_CACHE_FALLBACK"));
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let mut env = base();
        env.insert("ADMIN_TOKEN", "hunter2");
        let text = format!("{:?}", read(&env).unwrap());
        assert!(!text.contains("hunter2"));
    }
}
