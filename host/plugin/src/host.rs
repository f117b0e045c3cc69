//! The host side of one call: what the plugin's imports answer, and the
//! bookkeeping that bounds them.
//!
//! A [`CallState`] is the data of one call's `Store` and dies with it. It
//! answers `config-get` from the plugin version's stored configuration,
//! `payer-activity` through the pipeline's [`HostQueries`], and keeps the
//! call's log within its byte budget. It also records which host-side limit
//! a failing call hit, so that the error says so precisely instead of being
//! guessed from wasmtime's message.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmpay_domain::{Currency, Money};

use crate::bindings::wasmpay::plugin::{host, types};
use crate::limits::Limits;

/// Read-only questions a plugin may ask, answered by the pipeline.
///
/// One value serves one call: it is already scoped to the calling merchant,
/// the payer and the time the request was received, so a plugin can only
/// ever learn about its own merchant's payments from this payer.
pub trait HostQueries: Send + Sync {
    /// The payer's approved payments with this merchant in `currency`
    /// during the `window_seconds` before the request was received: their
    /// count and total. `Err` is a failed read (not the plugin's fault).
    fn payer_activity(
        &self,
        window_seconds: u32,
        currency: Currency,
    ) -> Result<(u32, Money), String>;
}

/// Answers every activity query with none: for plugins that never ask,
/// tests, and the runner when its input says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoActivity;

impl HostQueries for NoActivity {
    fn payer_activity(&self, _: u32, currency: Currency) -> Result<(u32, Money), String> {
        Ok((0, Money::zero(currency)))
    }
}

/// How loud a plugin's log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// One line a plugin logged during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// What each kept log line costs on top of its text, so that a flood of
/// empty lines is bounded too.
const LOG_LINE_OVERHEAD_BYTES: usize = 16;

/// Table elements one instance may have. Rust guests need a few hundred for
/// indirect calls; tables hold host pointers, so they are memory too.
const TABLE_ELEMENTS_MAX: usize = 10_000;
/// Core instances, memories and tables per call. A component built by
/// `wasm-component-ld` has a main module plus a couple of shims; these bound
/// a component that declares thousands of them.
pub(crate) const CORE_INSTANCES_MAX: usize = 16;
pub(crate) const MEMORIES_MAX: usize = 4;
pub(crate) const TABLES_MAX: usize = 8;

/// A host-side limit or failure that ended a call. Recorded in the state by
/// whatever raised it, so the call's error is classified from facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    MemoryLimit { requested_bytes: usize },
    TooManyQueries,
    HostQueryFailed(String),
    BadQuery(String),
}

/// The error a host function or the limiter returns to trap the guest. Its
/// text is what wasmtime reports; the classification uses [`Fault`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HostTrap(String);

/// The data of one call's `Store`.
pub(crate) struct CallState {
    config: Arc<BTreeMap<String, String>>,
    queries: Arc<dyn HostQueries>,
    pub(crate) log: LogBuffer,
    pub(crate) limiter: Limiter,
    activity_queries: u32,
    activity_queries_max: u32,
    pub(crate) fault: Option<Fault>,
}

impl CallState {
    pub(crate) fn new(
        config: Arc<BTreeMap<String, String>>,
        queries: Arc<dyn HostQueries>,
        limits: &Limits,
    ) -> Self {
        Self {
            config,
            queries,
            log: LogBuffer::new(limits.log_bytes_max, limits.log_line_bytes_max),
            limiter: Limiter::new(limits.memory_bytes_max),
            activity_queries: 0,
            activity_queries_max: limits.activity_queries_max,
            fault: None,
        }
    }

    /// Records `fault` and returns the error that traps the guest.
    fn trap(&mut self, fault: Fault, text: String) -> wasmtime::Error {
        self.fault = Some(fault);
        wasmtime::Error::new(HostTrap(text))
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn payer_activity(
        &mut self,
        window_seconds: u32,
        currency: String,
    ) -> wasmtime::Result<types::Activity> {
        self.activity_queries += 1;
        if self.activity_queries > self.activity_queries_max {
            let text = format!(
                "payer-activity asked more than {} times",
                self.activity_queries_max
            );
            return Err(self.trap(Fault::TooManyQueries, text));
        }
        let currency = match Currency::parse(&currency) {
            Ok(currency) => currency,
            Err(error) => {
                let text = format!("payer-activity: {error}");
                return Err(self.trap(Fault::BadQuery(text.clone()), text));
            }
        };
        match self.queries.payer_activity(window_seconds, currency) {
            Ok((count, volume)) => Ok(types::Activity {
                count,
                volume: crate::convert::money_to_wit(volume),
            }),
            Err(error) => {
                let text = format!("payer-activity: {error}");
                Err(self.trap(Fault::HostQueryFailed(text.clone()), text))
            }
        }
    }

    fn log(&mut self, level: types::LogLevel, message: String) {
        let level = match level {
            types::LogLevel::Debug => LogLevel::Debug,
            types::LogLevel::Info => LogLevel::Info,
            types::LogLevel::Warn => LogLevel::Warn,
            types::LogLevel::Error => LogLevel::Error,
        };
        self.log.push(level, message);
    }
}

/// A call's log, bounded in bytes.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) truncated: bool,
    /// The last error-level line, kept even when the budget is spent: a
    /// guest's panic handler logs its message there just before trapping,
    /// and the trap's error should carry it.
    pub(crate) last_error: Option<String>,
    bytes: usize,
    bytes_max: usize,
    line_bytes_max: usize,
    full: bool,
}

impl LogBuffer {
    fn new(bytes_max: usize, line_bytes_max: usize) -> Self {
        Self {
            lines: Vec::new(),
            truncated: false,
            last_error: None,
            bytes: 0,
            bytes_max,
            line_bytes_max,
            full: false,
        }
    }

    fn push(&mut self, level: LogLevel, mut message: String) {
        if message.len() > self.line_bytes_max {
            message.truncate(floor_char_boundary(&message, self.line_bytes_max));
            self.truncated = true;
        }
        if level == LogLevel::Error {
            self.last_error = Some(message.clone());
        }
        // Once one line is dropped, all later ones are too: a log with a
        // hole in the middle would mislead whoever reads it.
        let cost = message.len() + LOG_LINE_OVERHEAD_BYTES;
        if self.full || self.bytes + cost > self.bytes_max {
            self.full = true;
            self.truncated = true;
            return;
        }
        self.bytes += cost;
        self.lines.push(LogLine { level, message });
    }
}

/// The largest index at most `index` that is a character boundary of `text`.
pub(crate) fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    (0..=index)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Bounds the linear memory of a call's instance, all memories together.
///
/// Growing past the limit traps (instead of `memory.grow` returning -1):
/// a Rust guest's allocator aborts on failure with `unreachable`, which would
/// look like any panic. Trapping here records the fault, so the error names
/// the memory limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_bytes: usize,
    memory_bytes_max: usize,
    /// Growths of a memory that already had pages: `memory.grow`, not the
    /// instantiation's initial size.
    grows: u32,
    /// Set when a growth was refused; read by the call's error
    /// classification through [`CallState::fault`].
    refused: Option<usize>,
}

impl Limiter {
    fn new(memory_bytes_max: usize) -> Self {
        Self {
            memory_bytes: 0,
            memory_bytes_max,
            grows: 0,
            refused: None,
        }
    }

    pub(crate) fn grows(&self) -> u32 {
        self.grows
    }

    pub(crate) fn refused(&self) -> Option<Fault> {
        self.refused
            .map(|requested_bytes| Fault::MemoryLimit { requested_bytes })
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let requested = self.memory_bytes - current.min(self.memory_bytes) + desired;
        // Our limit first: the pooling allocator reports it as the memory's
        // maximum too, and it must trap as the limit, not fail quietly.
        if requested > self.memory_bytes_max {
            self.refused = Some(requested);
            return Err(wasmtime::Error::new(HostTrap(format!(
                "linear memory limit: growing to {requested} bytes exceeds {}",
                self.memory_bytes_max
            ))));
        }
        // A growth past the memory's own declared maximum fails the wasm
        // way (-1), as the spec says.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.memory_bytes = requested;
        if current > 0 && desired > current {
            self.grows = self.grows.saturating_add(1);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }

    fn instances(&self) -> usize {
        CORE_INSTANCES_MAX
    }

    fn memories(&self) -> usize {
        MEMORIES_MAX
    }

    fn tables(&self) -> usize {
        TABLES_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let mut log = LogBuffer::new(1000, 5);
        log.push(LogLevel::Info, "ééé".into());
        assert_eq!(log.lines[0].message, "éé");
        assert!(log.truncated);
    }

    #[test]
    fn lines_past_the_budget_are_dropped_and_later_ones_too() {
        let mut log = LogBuffer::new(2 * (LOG_LINE_OVERHEAD_BYTES + 4), 100);
        log.push(LogLevel::Info, "aaaa".into());
        log.push(LogLevel::Info, "bbbbbbbb".into());
        log.push(LogLevel::Info, "c".into());
        assert_eq!(log.lines.len(), 1);
        assert!(log.truncated);
    }

    #[test]
    fn the_last_error_line_survives_a_full_log() {
        let mut log = LogBuffer::new(LOG_LINE_OVERHEAD_BYTES, 100);
        log.push(LogLevel::Info, "spam".into());
        log.push(LogLevel::Error, "plugin panicked: boom".into());
        assert!(log.lines.is_empty());
        assert_eq!(log.last_error.as_deref(), Some("plugin panicked: boom"));
    }
}
