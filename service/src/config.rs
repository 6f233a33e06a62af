//! Typed configuration, read once from the environment and validated.
//!
//! Rollout flags use exactly the seed's names and default off, as the rollout deploys them.
//! Legacy switches reproduce the pre-Phase-53 behaviour of the unflagged fixes and default to
//! the fixed behaviour. Durations are whole milliseconds in variables ending `_MS`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub use incident_wire::Flag;

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

    fn slot(&mut self, flag: Flag) -> &mut bool {
        match flag {
            Flag::EmailSentAsync => &mut self.email_sent_async,
            Flag::CountsCacheFallback => &mut self.counts_cache_fallback,
            Flag::UnipileHealthGate => &mut self.unipile_health_gate,
            Flag::LogSlowPaths => &mut self.log_slow_paths,
            Flag::LegacyAuthNoise => &mut self.legacy_auth_noise,
            Flag::LegacyAiVerifier => &mut self.legacy_ai_verifier,
            Flag::LegacyLedgerTx => &mut self.legacy_ledger_tx,
            Flag::LegacyProviderCalls => &mut self.legacy_provider_calls,
        }
    }

    /// Sets one switch.
    pub fn set(&mut self, flag: Flag, value: bool) {
        *self.slot(flag) = value;
    }

    /// One switch's value.
    pub fn get(mut self, flag: Flag) -> bool {
        *self.slot(flag)
    }

    /// Sets switch `name`; `Err` names the switches that exist.
    pub fn set_named(&mut self, name: &str, value: bool) -> Result<(), String> {
        self.set(name.parse()?, value);
        Ok(())
    }

    /// Name → value, for the admin route, `/metrics` and reports.
    pub fn to_map(self) -> BTreeMap<&'static str, bool> {
        Flag::ALL.iter().map(|&f| (f.name(), self.get(f))).collect()
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
/// A scenario's `[service]` table sets them by field name (durations as `"500ms"`); the
/// service reads them from the environment variables named on each field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// `DB_POOL_MAX`: pool size.
    pub pool_max: u32,
    /// `DB_ACQUIRE_TIMEOUT_MS`: how long a request waits for a connection.
    #[serde(with = "incident_wire::duration")]
    pub acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: per-connection statement timeout (unset: the database's).
    #[serde(with = "incident_wire::duration::option")]
    pub statement_timeout: Option<Duration>,
    /// `REQUEST_TIMEOUT_MS`: the platform's function limit; past it the client gets 504.
    #[serde(with = "incident_wire::duration")]
    pub request_timeout: Duration,
    /// `COUNTS_QUERY_TIMEOUT_MS`: `SET LOCAL statement_timeout` of the fixed live counts query.
    #[serde(with = "incident_wire::duration")]
    pub counts_query_timeout: Duration,
    /// `COUNTS_CACHE_TTL_MS`: cached counts younger than this are served without a live query.
    #[serde(with = "incident_wire::duration")]
    pub counts_cache_ttl: Duration,
    /// `AI_VERIFY_BUDGET_MS`: the fixed verifier's time budget.
    #[serde(with = "incident_wire::duration")]
    pub ai_verify_budget: Duration,
    /// `PROVIDER_TIMEOUT_MS`: timeout of a fixed provider call.
    #[serde(with = "incident_wire::duration")]
    pub provider_timeout: Duration,
    /// `PROVIDER_MAX_ATTEMPTS`: attempts of a fixed provider call (retryable errors only).
    pub provider_max_attempts: u32,
    /// `PROVIDER_BACKOFF_MS`: base of the exponential backoff between attempts (with jitter).
    #[serde(with = "incident_wire::duration")]
    pub provider_backoff: Duration,
    /// `CRON_BATCH_LIMIT`: most units one cron tick handles.
    pub cron_batch_limit: u32,
    /// `CRON_TIME_BUDGET_MS`: a cron tick stops claiming work after this long (keep it below
    /// the function limit).
    #[serde(with = "incident_wire::duration")]
    pub cron_time_budget: Duration,
    /// `WORKER_CONCURRENCY`: jobs a background-jobs tick runs at once.
    pub worker_concurrency: u32,
    /// `JOB_LEASE_MS`: a claimed job is handed to another worker once its lease expires.
    #[serde(with = "incident_wire::duration")]
    pub job_lease: Duration,
    /// `JOB_MAX_ATTEMPTS`: attempts before a job or a follow-up is failed for good.
    pub max_attempts: u32,
    /// `UNIPILE_RECHECK_MS`: with the health gate, a workspace known disconnected is probed
    /// again (one send) once its status is this old; a success re-admits it.
    #[serde(with = "incident_wire::duration")]
    pub unipile_recheck: Duration,
    /// `WEBHOOK_TOLERANCE_MS`: how old a signed webhook timestamp may be.
    #[serde(with = "incident_wire::duration")]
    pub webhook_tolerance: Duration,
}

impl Limits {
    /// Refuses counts of 0 (a pool of none, no attempts), naming the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, n) in [
            ("pool_max", self.pool_max),
            ("provider_max_attempts", self.provider_max_attempts),
            ("cron_batch_limit", self.cron_batch_limit),
            ("worker_concurrency", self.worker_concurrency),
            ("max_attempts", self.max_attempts),
        ] {
            if n == 0 {
                return Err(format!("field `{field}` must be at least 1"));
            }
        }
        Ok(())
    }
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
            unipile_recheck: Duration::from_secs(60),
            webhook_tolerance: Duration::from_secs(300),
        }
    }
}

/// Secrets; never logged (Debug is redacted).
#[derive(Clone, PartialEq, Eq)]
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

impl Secrets {
    /// Fresh random secrets (128 bits each), as the harness gives each service it starts.
    pub fn random() -> Self {
        let r = || format!("{:032x}", rand::random::<u128>());
        Self {
            webhook: r(),
            cron: r(),
            admin: r(),
            session: r(),
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { <redacted> }")
    }
}

/// Base URLs of the external providers (fakes on loopback in the harness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUrls {
    /// `GHL_BASE_URL`
    pub ghl: String,
    /// `UNIPILE_BASE_URL`
    pub unipile: String,
    /// `AI_BASE_URL`
    pub ai: String,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The environment variable names of the configuration, in one place: [`Config::from_lookup`]
/// reads them and [`Config::to_env`] writes them.
pub mod var {
    pub const BIND: &str = "BIND";
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const WEBHOOK_SECRET: &str = "WEBHOOK_SECRET";
    pub const CRON_SECRET: &str = "CRON_SECRET";
    pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
    pub const SESSION_SECRET: &str = "SESSION_SECRET";
    pub const GHL_BASE_URL: &str = "GHL_BASE_URL";
    pub const UNIPILE_BASE_URL: &str = "UNIPILE_BASE_URL";
    pub const AI_BASE_URL: &str = "AI_BASE_URL";
    pub const DB_POOL_MAX: &str = "DB_POOL_MAX";
    pub const DB_ACQUIRE_TIMEOUT_MS: &str = "DB_ACQUIRE_TIMEOUT_MS";
    pub const DB_STATEMENT_TIMEOUT_MS: &str = "DB_STATEMENT_TIMEOUT_MS";
    pub const REQUEST_TIMEOUT_MS: &str = "REQUEST_TIMEOUT_MS";
    pub const COUNTS_QUERY_TIMEOUT_MS: &str = "COUNTS_QUERY_TIMEOUT_MS";
    pub const COUNTS_CACHE_TTL_MS: &str = "COUNTS_CACHE_TTL_MS";
    pub const AI_VERIFY_BUDGET_MS: &str = "AI_VERIFY_BUDGET_MS";
    pub const PROVIDER_TIMEOUT_MS: &str = "PROVIDER_TIMEOUT_MS";
    pub const PROVIDER_MAX_ATTEMPTS: &str = "PROVIDER_MAX_ATTEMPTS";
    pub const PROVIDER_BACKOFF_MS: &str = "PROVIDER_BACKOFF_MS";
    pub const CRON_BATCH_LIMIT: &str = "CRON_BATCH_LIMIT";
    pub const CRON_TIME_BUDGET_MS: &str = "CRON_TIME_BUDGET_MS";
    pub const WORKER_CONCURRENCY: &str = "WORKER_CONCURRENCY";
    pub const JOB_LEASE_MS: &str = "JOB_LEASE_MS";
    pub const JOB_MAX_ATTEMPTS: &str = "JOB_MAX_ATTEMPTS";
    pub const WEBHOOK_TOLERANCE_MS: &str = "WEBHOOK_TOLERANCE_MS";
    pub const UNIPILE_RECHECK_MS: &str = "UNIPILE_RECHECK_MS";
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The environment that [`Config::from_lookup`] reads back as this configuration: every
    /// variable, switches included, so nothing depends on the reader's defaults.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let l = &self.limits;
        let mut env = vec![
            (var::BIND, self.bind.to_string()),
            (var::DATABASE_URL, self.database_url.clone()),
            (var::WEBHOOK_SECRET, self.secrets.webhook.clone()),
            (var::CRON_SECRET, self.secrets.cron.clone()),
            (var::ADMIN_TOKEN, self.secrets.admin.clone()),
            (var::SESSION_SECRET, self.secrets.session.clone()),
            (var::GHL_BASE_URL, self.providers.ghl.clone()),
            (var::UNIPILE_BASE_URL, self.providers.unipile.clone()),
            (var::AI_BASE_URL, self.providers.ai.clone()),
            (var::DB_POOL_MAX, l.pool_max.to_string()),
            (var::DB_ACQUIRE_TIMEOUT_MS, ms(l.acquire_timeout)),
            (var::REQUEST_TIMEOUT_MS, ms(l.request_timeout)),
            (var::COUNTS_QUERY_TIMEOUT_MS, ms(l.counts_query_timeout)),
            (var::COUNTS_CACHE_TTL_MS, ms(l.counts_cache_ttl)),
            (var::AI_VERIFY_BUDGET_MS, ms(l.ai_verify_budget)),
            (var::PROVIDER_TIMEOUT_MS, ms(l.provider_timeout)),
            (
                var::PROVIDER_MAX_ATTEMPTS,
                l.provider_max_attempts.to_string(),
            ),
            (var::PROVIDER_BACKOFF_MS, ms(l.provider_backoff)),
            (var::CRON_BATCH_LIMIT, l.cron_batch_limit.to_string()),
            (var::CRON_TIME_BUDGET_MS, ms(l.cron_time_budget)),
            (var::WORKER_CONCURRENCY, l.worker_concurrency.to_string()),
            (var::JOB_LEASE_MS, ms(l.job_lease)),
            (var::JOB_MAX_ATTEMPTS, l.max_attempts.to_string()),
            (var::WEBHOOK_TOLERANCE_MS, ms(l.webhook_tolerance)),
            (var::UNIPILE_RECHECK_MS, ms(l.unipile_recheck)),
        ];
        if let Some(t) = l.statement_timeout {
            env.push((var::DB_STATEMENT_TIMEOUT_MS, ms(t)));
        }
        for (name, on) in self.switches.to_map() {
            env.push((name, if on { "1" } else { "0" }.to_owned()));
        }
        env
    }

    /// Reads the configuration through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &str| {
            get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError {
                    var: name.to_owned(),
                    value: String::new(),
                    reason: "required and not set".to_owned(),
                })
        };
        let parsed = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError {
                    var: name.to_owned(),
                    value: v.clone(),
                    reason: "expected a whole number".to_owned(),
                }),
            }
        };
        let count = |name: &str, default: u32| positive(name, parsed(name, default.into())?);
        let ms = |name: &str, default: Duration| {
            parsed(name, default.as_millis() as u64).map(Duration::from_millis)
        };
        let mut switches = Switches::default();
        for flag in Flag::ALL {
            let name = flag.name();
            if let Some(v) = get(name) {
                switches.set(flag, parse_bool(name, &v)?);
            }
        }
        let d = Limits::default();
        let limits = Limits {
            pool_max: count(var::DB_POOL_MAX, d.pool_max)?,
            acquire_timeout: ms(var::DB_ACQUIRE_TIMEOUT_MS, d.acquire_timeout)?,
            statement_timeout: match get(var::DB_STATEMENT_TIMEOUT_MS) {
                None => None,
                Some(_) => Some(ms(var::DB_STATEMENT_TIMEOUT_MS, Duration::ZERO)?),
            },
            request_timeout: ms(var::REQUEST_TIMEOUT_MS, d.request_timeout)?,
            counts_query_timeout: ms(var::COUNTS_QUERY_TIMEOUT_MS, d.counts_query_timeout)?,
            counts_cache_ttl: ms(var::COUNTS_CACHE_TTL_MS, d.counts_cache_ttl)?,
            ai_verify_budget: ms(var::AI_VERIFY_BUDGET_MS, d.ai_verify_budget)?,
            provider_timeout: ms(var::PROVIDER_TIMEOUT_MS, d.provider_timeout)?,
            provider_max_attempts: count(var::PROVIDER_MAX_ATTEMPTS, d.provider_max_attempts)?,
            provider_backoff: ms(var::PROVIDER_BACKOFF_MS, d.provider_backoff)?,
            cron_batch_limit: count(var::CRON_BATCH_LIMIT, d.cron_batch_limit)?,
            cron_time_budget: ms(var::CRON_TIME_BUDGET_MS, d.cron_time_budget)?,
            worker_concurrency: count(var::WORKER_CONCURRENCY, d.worker_concurrency)?,
            job_lease: ms(var::JOB_LEASE_MS, d.job_lease)?,
            max_attempts: count(var::JOB_MAX_ATTEMPTS, d.max_attempts)?,
            webhook_tolerance: ms(var::WEBHOOK_TOLERANCE_MS, d.webhook_tolerance)?,
            unipile_recheck: ms(var::UNIPILE_RECHECK_MS, d.unipile_recheck)?,
        };
        let bind_text = get(var::BIND).unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        let bind = SocketAddr::from_str(&bind_text).map_err(|_| ConfigError {
            var: var::BIND.to_owned(),
            value: bind_text.clone(),
            reason: "expected HOST:PORT, e.g. 127.0.0.1:0".to_owned(),
        })?;
        Ok(Self {
            bind,
            database_url: required(var::DATABASE_URL)?,
            switches,
            limits,
            secrets: Secrets {
                webhook: required(var::WEBHOOK_SECRET)?,
                cron: required(var::CRON_SECRET)?,
                admin: required(var::ADMIN_TOKEN)?,
                session: required(var::SESSION_SECRET)?,
            },
            providers: ProviderUrls {
                ghl: required(var::GHL_BASE_URL)?,
                unipile: required(var::UNIPILE_BASE_URL)?,
                ai: required(var::AI_BASE_URL)?,
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
        s.set_named("LEGACY_LEDGER_TX", true).unwrap();
        assert!(s.legacy_ledger_tx);
        assert!(s
            .set_named("INBOX_COUNTS", true)
            .unwrap_err()
            .contains("INBOX_COUNTS_CACHE_FALLBACK"));
    }

    #[test]
    fn the_environment_a_config_renders_reads_back_as_the_same_config() {
        let mut config = read(&base()).unwrap();
        config.bind = "127.0.0.1:0".parse().unwrap();
        config.switches = Switches::pre_phase_53();
        config.switches.set(Flag::UnipileHealthGate, true);
        config.limits = Limits {
            pool_max: 3,
            acquire_timeout: Duration::from_millis(1234),
            statement_timeout: Some(Duration::from_millis(800)),
            request_timeout: Duration::from_secs(7),
            counts_query_timeout: Duration::from_millis(250),
            counts_cache_ttl: Duration::from_millis(4500),
            ai_verify_budget: Duration::from_millis(600),
            provider_timeout: Duration::from_millis(900),
            provider_max_attempts: 2,
            provider_backoff: Duration::from_millis(30),
            cron_batch_limit: 17,
            cron_time_budget: Duration::from_millis(2500),
            worker_concurrency: 6,
            job_lease: Duration::from_millis(7000),
            max_attempts: 9,
            unipile_recheck: Duration::from_millis(15_000),
            webhook_tolerance: Duration::from_millis(60_000),
        };
        let env: HashMap<&str, String> = config.to_env().into_iter().collect();
        let back = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(back, config);
        // Every variable written is one the reader asks for: none is written in vain.
        let asked = std::cell::RefCell::new(Vec::new());
        Config::from_lookup(|k| {
            asked.borrow_mut().push(k.to_owned());
            env.get(k).cloned()
        })
        .unwrap();
        for (name, _) in config.to_env() {
            assert!(
                asked.borrow().iter().any(|k| k == name),
                "{name} is not read"
            );
        }
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let mut env = base();
        env.insert("ADMIN_TOKEN", "hunter2");
        let text = format!("{:?}", read(&env).unwrap());
        assert!(!text.contains("hunter2"));
    }
}
