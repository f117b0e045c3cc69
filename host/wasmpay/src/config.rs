//! The daemon's settings: one TOML file (`config/wasmpay.toml` documents every
//! key), overridden by environment variables, with every limit named with
//! its unit.
//!
//! Every problem is reported at once, each naming its key, so an operator
//! fixes a config in one pass rather than one error per restart.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::metrics::MetricsConfig;
use crate::mqtt::BrokerConfig;

/// Prefix of environment overrides: `WASMPAY__BROKER__ADDRESS=host:1883`
/// sets `broker.address`. Values are read as TOML (`42`, `true`, `"text"`),
/// falling back to a plain string.
pub const ENV_PREFIX: &str = "WASMPAY__";

/// Everything the daemon reads at start.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub broker: BrokerConfig,
    pub ledger: LedgerConfig,
    pub plugins: wasmpay_plugin::Limits,
    pub protocol: wasmpay_protocol::DecodeLimits,
    pub pipeline: PipelineConfig,
    pub fees: FeesConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
}

/// `[ledger]`: where the money is kept and how durably.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// The SQLite file: ledger, idempotency records and plugin registry.
    pub path: PathBuf,
    /// `full` (an acknowledged payment survives power loss) or `normal`
    /// (survives a process crash; the last commits may be lost on power loss).
    pub synchronous: String,
    /// How long a request id is remembered; at least 24 hours.
    pub idempotency_retention_hours: u64,
    /// Sub-accounts a merchant's plugin may route money to.
    pub merchant_subaccounts_max: usize,
    /// Who copies the write-ahead log into the file: `background` (a
    /// thread of its own; no commit waits for the copy) or `commit`
    /// (SQLite's automatic checkpoint, inside a commit now and then).
    pub checkpoint: String,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("wasmpay.db"),
            synchronous: "full".to_owned(),
            idempotency_retention_hours: 7 * 24,
            merchant_subaccounts_max: 16,
            checkpoint: "background".to_owned(),
        }
    }
}

/// `[pipeline]`: queue depths and concurrency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Threads that run plugin calls and compile uploads.
    pub plugin_workers: usize,
    /// Operations committed in one ledger transaction at most (group commit).
    pub batch_ops_max: usize,
    /// How often expired holds are released.
    pub hold_sweep_interval_ms: u64,
    /// Consecutive failed calls (trap, limit, malformed or invalid quote)
    /// after which a merchant's plugin version is quarantined: its payments
    /// are declined with `plugin_quarantined` without running it until the
    /// merchant uploads or activates a version. 0 never quarantines.
    pub plugin_failures_quarantine_max: u32,
    /// How long shutdown waits for in-flight work before giving up (the
    /// unfinished messages stay unacked and are redelivered).
    pub shutdown_grace_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            plugin_workers: 2,
            batch_ops_max: 512,
            hold_sweep_interval_ms: 1_000,
            plugin_failures_quarantine_max: 20,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// `[fees]`: the operator's cut.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeesConfig {
    /// Basis points of each payment's total credited to the platform
    /// (100 = 1%), charged to the merchant.
    pub platform_fee_bps: u32,
}

/// `[log]`: what the daemon writes to stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter: `info`, `wasmpay=debug`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".to_owned(),
            level: "info".to_owned(),
        }
    }
}

/// Every problem found in a config, each naming its key.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const SECTIONS: &[&str] = &[
    "broker", "ledger", "plugins", "protocol", "pipeline", "fees", "log", "metrics",
];

impl Config {
    /// Reads `path` (if any) and applies `WASMPAY__*` overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigErrors(vec![format!("{}: {e}", p.display())]))?,
            None => String::new(),
        };
        Self::parse(&text, env)
    }

    /// Parses TOML text plus overrides; see [`Config::load`].
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => return Err(ConfigErrors(vec![format!("invalid TOML: {e}")])),
        };
        apply_env(&mut table, env, &mut errors);
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                errors.push(format!(
                    "`{key}`: unknown section, expected one of {}",
                    SECTIONS.join(", ")
                ));
            }
        }
        let config = Self {
            broker: section(&table, "broker", &mut errors),
            ledger: section(&table, "ledger", &mut errors),
            plugins: section(&table, "plugins", &mut errors),
            protocol: section(&table, "protocol", &mut errors),
            pipeline: section(&table, "pipeline", &mut errors),
            fees: section(&table, "fees", &mut errors),
            log: section(&table, "log", &mut errors),
            metrics: section(&table, "metrics", &mut errors),
        };
        config.validate(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let address = if self.broker.is_embedded() {
            self.broker.embedded_listen_addr().map(|_| ())
        } else {
            self.broker.host_port().map(|_| ())
        };
        errors.extend(address.err());
        errors.extend(self.broker.tls_problems());
        errors.extend(
            self.plugins
                .problems()
                .into_iter()
                .map(|p| format!("plugins: {p}")),
        );
        errors.extend(
            self.protocol
                .problems()
                .into_iter()
                .map(|p| format!("protocol: {p}")),
        );
        let upload_max = self.protocol.upload_payload_bytes_max();
        if u64::from(self.broker.packet_bytes_max) < upload_max as u64 {
            errors.push(format!(
                "broker.packet_bytes_max ({}) is below the largest upload message (protocol.upload_bytes_max in base64 plus a request: {upload_max} bytes)",
                self.broker.packet_bytes_max
            ));
        }
        let mut check = |ok: bool, message: &str| {
            if !ok {
                errors.push(message.to_owned());
            }
        };
        check(
            self.broker.inflight_messages_max > 0,
            "broker.inflight_messages_max: must be at least 1",
        );
        check(
            self.broker.packets_per_write_max > 0,
            "broker.packets_per_write_max: must be at least 1",
        );
        check(
            matches!(self.ledger.synchronous.as_str(), "full" | "normal"),
            "ledger.synchronous: expected `full` or `normal`",
        );
        check(
            matches!(self.ledger.checkpoint.as_str(), "background" | "commit"),
            "ledger.checkpoint: expected `background` or `commit`",
        );
        check(
            self.ledger.idempotency_retention_hours >= 24,
            "ledger.idempotency_retention_hours: must be at least 24 (clients retry for a day)",
        );
        check(
            self.pipeline.plugin_workers > 0,
            "pipeline.plugin_workers: must be at least 1",
        );
        // Every worker may hold a slot at once; fewer slots would turn a
        // busy moment into `plugin_busy` declines.
        check(
            self.plugins.pooling_slots == 0
                || self.plugins.pooling_slots as usize >= self.pipeline.plugin_workers,
            "plugins.pooling_slots: must be 0 (no pooling) or at least pipeline.plugin_workers",
        );
        check(
            self.pipeline.batch_ops_max > 0,
            "pipeline.batch_ops_max: must be at least 1",
        );
        check(
            self.fees.platform_fee_bps <= 10_000,
            "fees.platform_fee_bps: at most 10000 (100%)",
        );
        check(
            matches!(self.log.format.as_str(), "text" | "json"),
            "log.format: expected `text` or `json`",
        );
    }
}

/// Deserializes one section, recording its errors under the section's name.
fn section<T: DeserializeOwned + Default>(
    table: &toml::Table,
    name: &str,
    errors: &mut Vec<String>,
) -> T {
    match table.get(name) {
        None => T::default(),
        Some(value) => match value.clone().try_into() {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("[{name}]: {}", e.message().trim()));
                T::default()
            }
        },
    }
}

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<String>,
) {
    let overrides: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    for (key, raw) in overrides {
        let path: Vec<String> = key[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let [section, field] = path.as_slice() else {
            errors.push(format!(
                "{key}: expected {ENV_PREFIX}<SECTION>__<KEY>, like WASMPAY__BROKER__ADDRESS"
            ));
            continue;
        };
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(field.clone(), value);
            }
            _ => errors.push(format!("{key}: `{section}` is not a section")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_shipped_config_file_parses_and_matches_the_defaults() {
        let text = include_str!("../../../config/wasmpay.toml");
        let shipped = Config::parse(text, no_env()).expect("shipped config is valid");
        let defaults = Config::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let text = r#"
            [broker]
            address = "no-port"
            packets_per_write_max = 0
            [ledger]
            synchronous = "sometimes"
            checkpoint = "never"
            idempotency_retention_hours = 1
            [pipeline]
            plugin_workers = "two"
            [colour]
            x = 1
        "#;
        let errors = Config::parse(text, no_env()).unwrap_err().0;
        for key in [
            "broker.address",
            "broker.packets_per_write_max",
            "ledger.synchronous",
            "ledger.checkpoint",
            "ledger.idempotency_retention_hours",
            "[pipeline]",
            "`colour`",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(key)),
                "{key} missing from {errors:#?}"
            );
        }
    }

    #[test]
    fn pooling_needs_a_slot_per_plugin_worker_or_none_at_all() {
        let text = |slots: u32, workers: usize| {
            format!("[plugins]\npooling_slots = {slots}\n[pipeline]\nplugin_workers = {workers}\n")
        };
        let errors = Config::parse(&text(2, 4), no_env()).unwrap_err().0;
        assert!(
            errors.iter().any(|e| e.contains("plugins.pooling_slots")),
            "{errors:#?}"
        );
        assert!(Config::parse(&text(4, 4), no_env()).is_ok());
        assert!(Config::parse(&text(0, 4), no_env()).is_ok());
        assert!(
            Config::default().plugins.pooling_slots as usize
                >= Config::default().pipeline.plugin_workers
        );
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let env = vec![
            (
                "WASMPAY__BROKER__ADDRESS".to_owned(),
                "broker:1884".to_owned(),
            ),
            (
                "WASMPAY__FEES__PLATFORM_FEE_BPS".to_owned(),
                "150".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::parse("[broker]\naddress = \"a:1\"\n", env).unwrap();
        assert_eq!(config.broker.address, "broker:1884");
        assert_eq!(config.fees.platform_fee_bps, 150);
    }

    #[test]
    fn embedded_is_the_default_and_may_be_chosen_in_the_file_or_the_environment() {
        assert!(Config::default().broker.is_embedded());
        let in_file = Config::parse("[broker]\naddress = \"embedded\"\n", no_env()).unwrap();
        assert!(in_file.broker.is_embedded());
        let env = vec![("WASMPAY__BROKER__ADDRESS".to_owned(), "embedded".to_owned())];
        let in_env = Config::parse("[broker]\naddress = \"a:1\"\n", env).unwrap();
        assert!(in_env.broker.is_embedded());
        assert_eq!(
            in_env.broker.embedded_listen_addr(),
            Ok(([127, 0, 0, 1], 1883).into())
        );
    }

    #[test]
    fn an_address_in_the_environment_wins_over_embedded_in_the_file() {
        let env = vec![(
            "WASMPAY__BROKER__ADDRESS".to_owned(),
            "broker:1884".to_owned(),
        )];
        let config = Config::parse("[broker]\naddress = \"embedded\"\n", env).unwrap();
        assert!(!config.broker.is_embedded());
        assert_eq!(config.broker.host_port(), Ok(("broker".to_owned(), 1884)));
    }

    #[test]
    fn the_embedded_broker_listens_on_loopback_only() {
        for (listen, expected) in [
            ("0.0.0.0:1883", "loopback only"),
            ("localhost", "expected ip:port"),
        ] {
            let text = format!("[broker]\nembedded_listen = \"{listen}\"\n");
            let errors = Config::parse(&text, no_env()).unwrap_err().0;
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("broker.embedded_listen") && e.contains(expected)),
                "{listen}: {errors:#?}"
            );
        }
        // With a broker of its own, the embedded broker's key is not used.
        let text = "[broker]\naddress = \"b:1883\"\nembedded_listen = \"0.0.0.0:1\"\n";
        assert!(Config::parse(text, no_env()).is_ok());
    }

    #[test]
    fn problems_beside_embedded_are_still_reported_with_their_keys() {
        let text = "[broker]\naddress = \"embedded\"\n[log]\nformat = \"xml\"\n";
        let errors = Config::parse(text, no_env()).unwrap_err().0;
        assert!(
            errors.iter().any(|e| e.contains("log.format")),
            "{errors:#?}"
        );
    }

    #[test]
    fn tls_files_without_tls_are_refused_rather_than_ignored() {
        let text = "[broker]\naddress = \"b:8883\"\ntls_ca_file = \"ca.pem\"\n";
        let errors = Config::parse(text, no_env()).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("broker.tls_ca_file") && errors[0].contains("tls = true"),
            "{errors:#?}"
        );
    }

    #[test]
    fn tls_with_the_embedded_broker_is_refused() {
        let errors = Config::parse("[broker]\ntls = true\n", no_env())
            .unwrap_err()
            .0;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("broker.tls:") && e.contains("embedded")),
            "{errors:#?}"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn unreadable_tls_files_are_refused_each_naming_its_key() {
        let text = "[broker]\naddress = \"b:8883\"\ntls = true\ntls_ca_file = \"/nonexistent/ca.pem\"\ntls_client_cert_file = \"/nonexistent/client.pem\"\n";
        let errors = Config::parse(text, no_env()).unwrap_err().0;
        for key in ["broker.tls_ca_file:", "broker.tls_client_key_file:"] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} missing from {errors:#?}"
            );
        }
        assert!(
            errors.iter().any(|e| e.contains("/nonexistent/ca.pem")),
            "{errors:#?}"
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_in_a_build_without_it_is_refused_saying_so() {
        let text = "[broker]\naddress = \"b:8883\"\ntls = true\n";
        let errors = Config::parse(text, no_env()).unwrap_err().0;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("broker.tls:") && e.contains("built without TLS")),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let errors = Config::parse("[broker]\nadress = \"a:1\"\n", no_env())
            .unwrap_err()
            .0;
        assert!(errors[0].contains("adress"), "{errors:?}");
    }
}
