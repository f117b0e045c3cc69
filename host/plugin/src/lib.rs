//! Runs merchant rules as sandboxed WebAssembly components: the only crate
//! in wasmpay that knows wasmtime.
//!
//! A merchant uploads a component implementing the `merchant-rules` world
//! (`wit/plugin.wit`). The parts, in the order a plugin meets them:
//!
//! - [`Runtime::compile`]: upload checks (a component, within size, imports
//!   only `wasmpay:plugin/host`, exports `rules` with the right types) and
//!   compilation into an artifact cached by `(sha256, engine hash)`.
//! - [`Runtime::load`]: a stored artifact becomes a [`LoadedPlugin`], linked
//!   once per version.
//! - [`PluginSet`]: which version is active per merchant, swapped atomically.
//! - [`Runtime::decide_payment`] / [`Runtime::decide_refund`]: one fresh
//!   store per call under [`Limits`]; the answer comes back converted into
//!   domain types with its cost and logs ([`Called`]), or as a
//!   [`PluginError`] with a stable decline code.
//! - [`runner`]: what `wasmpay plugin run` shows a plugin author.
//!
//! Architecture invariant: WIT-generated types (`bindings`) never leave this
//! crate; `convert` is the edge where they become domain types, and where a
//! plugin's answer is validated.

mod bindings;
mod convert;
mod error;
mod host;
mod limits;
mod plugin_set;
pub mod runner;
mod runtime;

pub use convert::{PaymentInput, RefundInput};
pub use error::{PluginError, RuntimeError, UploadError};
pub use host::{HostQueries, LogLevel, LogLine, NoActivity};
pub use limits::{Limits, MemoryReset, STACK_BYTES_CEILING};
pub use plugin_set::PluginSet;
pub use runtime::{Called, Compiled, LoadedPlugin, PluginMeta, Runtime, SCAN_KEEP_RESIDENT_BYTES};
