//! The runtime: one wasmtime engine, the host's imports, and the call path.
//!
//! Upload: [`Runtime::compile`] checks that the bytes are a component of
//! acceptable size that imports only the `host` interface and exports
//! `rules` with the right types, then compiles it once into an artifact
//! cached by `(sha256, engine hash)`. Activation: [`Runtime::load`] turns a
//! stored artifact into a [`LoadedPlugin`] holding a pre-linked
//! `InstancePre`, loaded once per component and shared by every merchant's
//! version of it. Each call: a fresh `Store` with its own fuel, deadline,
//! memory limiter and log; instantiate, call, convert the answer, drop the
//! store. Nothing survives from one call to the next, and a trap ends only
//! the store it happened in.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmpay_domain::{Decision, MerchantId, PluginRef, RefundDecision};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
};

use crate::bindings::wasmpay::plugin::types as wit;
use crate::bindings::{MerchantRules, MerchantRulesPre};
use crate::convert::{self, PaymentInput, RefundInput, Refusal};
use crate::error::{PluginError, RuntimeError, UploadError};
use crate::host::{self, CallState, Fault, HostQueries, LogLine};
use crate::limits::{Limits, MemoryReset};

/// The interfaces a plugin may import. `types` appears when the host
/// interface's `use` of it is kept as an import; it has no functions.
const ALLOWED_IMPORTS: [&str; 2] = ["wasmpay:plugin/host@0.1.0", "wasmpay:plugin/types@0.1.0"];
/// The interface a plugin must export.
const RULES_EXPORT: &str = "wasmpay:plugin/rules@0.1.0";

/// How often the epoch ticker advances the engine's epoch. Deadlines are
/// whole ticks, so a call's timeout is honoured to within one tick; 5 ms is
/// tight enough for a 200 ms backstop and costs 200 wake-ups a second.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What wasmtime says when a guest hands the host more bytes than the
/// store's hostcall fuel allows. The error type is private to wasmtime, so
/// its text is matched; the test
/// `an_answer_larger_than_guest_memory_is_refused_before_the_host_copies_it`
/// pins it.
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// The compiled form of an uploaded component, ready to store.
#[derive(Clone, PartialEq, Eq)]
pub struct Compiled {
    /// Lower-case hex SHA-256 of the uploaded component bytes.
    pub sha256: String,
    /// Native code for this engine (see [`Runtime::engine_hash`]).
    pub artifact: Vec<u8>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("sha256", &self.sha256)
            .field("artifact_bytes", &self.artifact.len())
            .finish()
    }
}

/// What the registry knows about a plugin version besides its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginMeta {
    pub merchant: MerchantId,
    /// Per-merchant version number, from 1.
    pub version: u32,
    /// SHA-256 of the uploaded component, as in [`Compiled::sha256`].
    pub sha256: String,
    /// The merchant's configuration for this version, read by `config-get`.
    pub config: BTreeMap<String, String>,
}

/// A plugin version ready to call: compiled, linked and type-checked.
pub struct LoadedPlugin {
    merchant: MerchantId,
    plugin: PluginRef,
    /// Shared with every call's store, so a call costs no copy of it.
    config: Arc<BTreeMap<String, String>>,
    /// Imports resolved and exports located once per component, shared by
    /// every loaded version with the same code (see [`Runtime::load`]);
    /// each call only instantiates.
    pre: Arc<MerchantRulesPre<CallState>>,
}

impl LoadedPlugin {
    /// The merchant whose rules these are.
    pub fn merchant(&self) -> &MerchantId {
        &self.merchant
    }

    /// The version and hash recorded with every decision it makes.
    pub fn plugin_ref(&self) -> &PluginRef {
        &self.plugin
    }

    /// Whether the two run one loaded copy of the same code (see
    /// [`Runtime::load`]).
    pub fn shares_code_with(&self, other: &LoadedPlugin) -> bool {
        Arc::ptr_eq(&self.pre, &other.pre)
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("merchant", &self.merchant)
            .field("plugin", &self.plugin)
            .field("config_keys", &self.config.len())
            .finish_non_exhaustive()
    }
}

/// A plugin's answer with what it cost and what it logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called<T> {
    pub value: T,
    /// Which version made the decision: stored with every ledger entry.
    pub plugin: PluginRef,
    /// Fuel units burned, instantiation included.
    pub fuel_used: u64,
    /// Times the guest grew its linear memory past its initial size. Each
    /// growth costs the host an `mprotect` when the slot is next reset, so
    /// the SDK's guests answer a payment with none.
    pub memory_grows: u32,
    /// Wall time from store creation to converted answer.
    pub elapsed: Duration,
    pub logs: Vec<LogLine>,
    /// Whether lines were cut or dropped to stay within the log limits.
    pub logs_truncated: bool,
}

/// What a call cost and logged, kept even when the call failed (the local
/// runner shows a failing plugin's logs).
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) fuel_used: u64,
    pub(crate) memory_grows: u32,
    pub(crate) elapsed: Duration,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) logs_truncated: bool,
}

/// A call's outcome with its trace.
#[derive(Debug)]
pub(crate) struct Traced<T> {
    pub(crate) result: Result<T, PluginError>,
    pub(crate) trace: Trace,
}

impl<T> Traced<T> {
    fn into_called(self, plugin: &LoadedPlugin) -> Result<Called<T>, PluginError> {
        let trace = self.trace;
        Ok(Called {
            value: self.result?,
            plugin: plugin.plugin.clone(),
            fuel_used: trace.fuel_used,
            memory_grows: trace.memory_grows,
            elapsed: trace.elapsed,
            logs: trace.logs,
            logs_truncated: trace.logs_truncated,
        })
    }
}

/// Runs merchant plugins under [`Limits`]. One per process; share it.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    limits: Limits,
    engine_hash: String,
    memory_reset: MemoryReset,
    /// Epoch ticks per call before the deadline traps.
    deadline_ticks: u64,
    /// The code every loaded plugin runs, by component SHA-256: many
    /// merchants running one component with their own configuration share
    /// one copy of its native code and memory image (see [`Runtime::load`]).
    shared_code: std::sync::Mutex<SharedCode>,
    _ticker: EpochTicker,
}

/// Loaded components by SHA-256, held weakly: a component no loaded plugin
/// uses any more is freed, and its entry swept at a later load.
#[derive(Default)]
struct SharedCode {
    by_sha256: std::collections::HashMap<String, std::sync::Weak<MerchantRulesPre<CallState>>>,
    /// Entries at which the next sweep of dead entries runs.
    sweep_at: usize,
}

impl SharedCode {
    /// Entries before the first sweep; after each, twice the live count.
    const SWEEP_AT_MIN: usize = 64;

    fn get(&self, sha256: &str) -> Option<Arc<MerchantRulesPre<CallState>>> {
        self.by_sha256
            .get(sha256)
            .and_then(std::sync::Weak::upgrade)
    }

    fn insert(&mut self, sha256: &str, pre: &Arc<MerchantRulesPre<CallState>>) {
        self.by_sha256
            .insert(sha256.to_owned(), Arc::downgrade(pre));
        if self.by_sha256.len() >= self.sweep_at {
            self.by_sha256.retain(|_, pre| pre.strong_count() > 0);
            self.sweep_at = (2 * self.by_sha256.len()).max(Self::SWEEP_AT_MIN);
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .field("engine_hash", &self.engine_hash)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine, links the host imports and starts the epoch
    /// ticker (stopped when the runtime is dropped).
    pub fn new(limits: Limits) -> Result<Self, RuntimeError> {
        let problems = limits.problems();
        if !problems.is_empty() {
            return Err(RuntimeError::InvalidLimits(problems));
        }
        let (engine, memory_reset) = new_engine(&limits)?;
        let mut linker = Linker::new(&engine);
        MerchantRules::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| RuntimeError::Engine(format!("linking host imports: {e:#}")))?;
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex::encode(hasher.0.finalize());
        let tick_ms = EPOCH_TICK.as_millis() as u64;
        // One extra tick: the first may come at once after the deadline is
        // set, and the timeout must never be cut short.
        let deadline_ticks = limits.timeout_ms.div_ceil(tick_ms) + 1;
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| RuntimeError::Engine(format!("starting the epoch ticker: {e}")))?;
        Ok(Self {
            engine,
            linker,
            limits,
            engine_hash,
            memory_reset,
            deadline_ticks,
            shared_code: std::sync::Mutex::default(),
            _ticker: ticker,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How pooled memory is reset between calls on this machine: `Scan` or
    /// `Madvise`, never `Auto`; `Madvise` with `pooling_slots = 0`, where
    /// each call's memory is unmapped whole.
    pub fn memory_reset(&self) -> MemoryReset {
        self.memory_reset
    }

    /// Pooled memories that are free and still hold what the plugin they
    /// last served left, ready for its next call without mapping its image
    /// again; `None` without pooling (`pooling_slots = 0`).
    pub fn warm_memories(&self) -> Option<u32> {
        self.engine
            .pooling_allocator_metrics()
            .map(|metrics| metrics.unused_warm_memories())
    }

    /// Lower-case hex SHA-256 of the engine's compatibility hash (wasmtime
    /// version, target, compiler settings, enabled features). An artifact
    /// compiled by an engine with the same hash loads in this one; cache
    /// artifacts by `(sha256, engine_hash)` and recompile on a miss.
    pub fn engine_hash(&self) -> String {
        self.engine_hash.clone()
    }

    /// Validates an uploaded component and compiles it to an artifact.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, UploadError> {
        if wasm.len() > self.limits.component_bytes_max {
            return Err(UploadError::ComponentTooLarge {
                size_bytes: wasm.len(),
                component_bytes_max: self.limits.component_bytes_max,
            });
        }
        check_header(wasm)?;
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| UploadError::CompileFailed(format!("{e:#}")))?;
        self.link(&component)?;
        let artifact = component
            .serialize()
            .map_err(|e| UploadError::CompileFailed(format!("serializing: {e:#}")))?;
        Ok(Compiled {
            sha256: hex::encode(Sha256::digest(wasm)),
            artifact,
        })
    }

    /// Loads an artifact made by [`Runtime::compile`] on an engine with the
    /// same [`Runtime::engine_hash`].
    ///
    /// Plugins whose component has the same SHA-256 (`meta.sha256`) share
    /// its code: when one is loaded already, `artifact` is not read again,
    /// and the new plugin differs only in its merchant, version and
    /// configuration. Merchants who run one set of rules with their own
    /// settings then cost one copy of its native code and memory image, not
    /// one each, and a pooled slot that last ran it is warm for all of them.
    /// Calls stay as isolated as before: each gets a fresh instance, whose
    /// memory starts from the component's initial image whichever merchant
    /// used the slot last.
    pub fn load(
        &self,
        artifact: &[u8],
        meta: PluginMeta,
    ) -> Result<Arc<LoadedPlugin>, UploadError> {
        self.check_config(&meta.config)?;
        // Held across the load, so that two loads of new code at once do not
        // both deserialize it (loads are rare: start, upload, activation).
        let mut shared = self
            .shared_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pre = match shared.get(&meta.sha256) {
            Some(pre) => pre,
            None => {
                let pre = Arc::new(self.load_code(artifact)?);
                shared.insert(&meta.sha256, &pre);
                pre
            }
        };
        drop(shared);
        Ok(Arc::new(LoadedPlugin {
            merchant: meta.merchant,
            plugin: PluginRef {
                version: meta.version,
                sha256: meta.sha256,
            },
            config: Arc::new(meta.config),
            pre,
        }))
    }

    /// Components loaded and still used by a plugin: one per distinct
    /// SHA-256, however many merchants run it.
    pub fn components_loaded(&self) -> usize {
        self.shared_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_sha256
            .values()
            .filter(|pre| pre.strong_count() > 0)
            .count()
    }

    /// About how many memory mappings (the kernel's `vm.max_map_count`
    /// counts them) the runtime may hold once every pooled slot has served
    /// and `components` distinct components are loaded: a loaded component
    /// maps its code and image in a few pieces, and a warm slot keeps its
    /// plugin's image mapped. Measured with the bench: 10,000 components
    /// of their own on 1,024 slots held 36,500 mappings in all, and 10,240
    /// slots beside them ran out at the default limit of 65,530 (a thread
    /// could not map its stack guard and the process aborted). An upper
    /// estimate, four per slot and per component, for a warning at start.
    pub fn mappings_estimate(&self, components: usize) -> usize {
        const PER_SLOT_OR_COMPONENT: usize = 4;
        PER_SLOT_OR_COMPONENT * (self.limits.pooling_slots as usize).saturating_add(components)
    }

    /// An artifact's code, deserialized, checked and linked.
    fn load_code(&self, artifact: &[u8]) -> Result<MerchantRulesPre<CallState>, UploadError> {
        #[allow(unsafe_code)]
        // SAFETY: `Component::deserialize` trusts its bytes to be native code
        // this wasmtime produced. The registry only stores artifacts that
        // `Runtime::compile` produced on this host, keyed by the component's
        // sha256 and `engine_hash`, and never accepts artifacts from outside;
        // wasmtime itself refuses bytes from an incompatible engine.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| UploadError::ArtifactInvalid(format!("{e:#}")))?;
        // The checks are cheap and the artifact is only as trustworthy as the
        // store it came from, so they run again.
        let pre = self.link(&component)?;
        // Build the copy-on-write memory image now rather than in the first
        // payment's call.
        component
            .initialize_copy_on_write_image()
            .map_err(|e| UploadError::ArtifactInvalid(format!("memory image: {e:#}")))?;
        Ok(pre)
    }

    /// Asks `plugin` to price and decide a payment.
    ///
    /// `queries` answers the plugin's `payer-activity` questions for this
    /// payment; it is shared with the call's store, which is why it is an
    /// `Arc` (a store's data must own what it holds).
    ///
    /// Runs on the calling thread, whose native stack must have room for
    /// `stack_bytes_max` plus the host's own frames (tokio's 2 MiB is).
    ///
    /// # Panics
    /// If `request.merchant` is not the plugin's merchant: that would run
    /// one merchant's payment through another's rules, a bug upstream.
    pub fn decide_payment(
        &self,
        plugin: &LoadedPlugin,
        queries: Arc<dyn HostQueries>,
        request: &PaymentInput,
    ) -> Result<Called<Decision>, PluginError> {
        self.decide_payment_traced(plugin, queries, request)
            .into_called(plugin)
    }

    /// Asks `plugin` to allow or deny a refund. As
    /// [`decide_payment`](Self::decide_payment), panics if the refund's
    /// merchant is not the plugin's.
    pub fn decide_refund(
        &self,
        plugin: &LoadedPlugin,
        queries: Arc<dyn HostQueries>,
        request: &RefundInput,
    ) -> Result<Called<RefundDecision>, PluginError> {
        self.decide_refund_traced(plugin, queries, request)
            .into_called(plugin)
    }

    pub(crate) fn decide_payment_traced(
        &self,
        plugin: &LoadedPlugin,
        queries: Arc<dyn HostQueries>,
        request: &PaymentInput,
    ) -> Traced<Decision> {
        assert_eq!(
            request.merchant, plugin.merchant,
            "a payment must go to its own merchant's plugin"
        );
        let request = request.to_wit();
        self.call(
            plugin,
            queries,
            |rules, store| {
                rules
                    .wasmpay_plugin_rules()
                    .call_decide_payment(store, &request)
            },
            convert::decision,
        )
    }

    pub(crate) fn decide_refund_traced(
        &self,
        plugin: &LoadedPlugin,
        queries: Arc<dyn HostQueries>,
        request: &RefundInput,
    ) -> Traced<RefundDecision> {
        assert_eq!(
            request.merchant, plugin.merchant,
            "a refund must go to its own merchant's plugin"
        );
        let request = request.to_wit();
        self.call(
            plugin,
            queries,
            |rules, store| {
                rules
                    .wasmpay_plugin_rules()
                    .call_decide_refund(store, &request)
            },
            convert::refund_decision,
        )
    }

    /// One isolated call: fresh store, instantiate, invoke, convert, drop.
    fn call<W, T>(
        &self,
        plugin: &LoadedPlugin,
        queries: Arc<dyn HostQueries>,
        invoke: impl FnOnce(&MerchantRules, &mut Store<CallState>) -> wasmtime::Result<W>,
        convert: impl FnOnce(W, usize) -> Result<T, Refusal>,
    ) -> Traced<T> {
        let started = Instant::now();
        let state = CallState::new(plugin.config.clone(), queries, &self.limits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Cannot fail: fuel is enabled in the engine config.
        store
            .set_fuel(self.limits.fuel_max)
            .expect("fuel is enabled");
        store.set_epoch_deadline(self.deadline_ticks);
        store.epoch_deadline_trap();
        // What the host copies out of the guest in one go (the decision, or
        // one import's arguments) is bounded by the guest's own memory size:
        // a log line longer than that cannot exist, and a decision whose
        // entries all alias one string cannot multiply it.
        store.set_hostcall_fuel(self.limits.memory_bytes_max);

        let answer = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|rules| invoke(&rules, &mut store));
        let fuel_used = self.limits.fuel_max - store.get_fuel().unwrap_or(0);
        let result = match answer {
            Ok(answer) => {
                convert(answer, self.limits.output_bytes_max).map_err(|refusal| match refusal {
                    Refusal::TooLarge { size_bytes } => PluginError::OutputTooLarge(format!(
                        "the decision takes {size_bytes} bytes, at most {} are allowed",
                        self.limits.output_bytes_max
                    )),
                    Refusal::Malformed(detail) => PluginError::MalformedOutput(detail),
                })
            }
            Err(error) => Err(self.classify(&error, store.data())),
        };
        // The store is dropped here whatever happened: after a trap its
        // instance is poisoned, and no call may see another's state.
        let state = store.into_data();
        tracing::debug!(
            merchant = %plugin.merchant,
            version = plugin.plugin.version,
            fuel_used,
            outcome = result.as_ref().map_or_else(PluginError::code, |_| "answered"),
            "plugin call"
        );
        Traced {
            result,
            trace: Trace {
                fuel_used,
                memory_grows: state.limiter.grows(),
                elapsed: started.elapsed(),
                logs: state.log.lines,
                logs_truncated: state.log.truncated,
            },
        }
    }

    /// Names the limit or fault that ended a call, from what the host
    /// recorded first and wasmtime's trap code second.
    fn classify(&self, error: &wasmtime::Error, state: &CallState) -> PluginError {
        let limits = &self.limits;
        if let Some(fault) = state.fault.clone().or_else(|| state.limiter.refused()) {
            return match fault {
                Fault::MemoryLimit { requested_bytes } => PluginError::MemoryLimit {
                    requested_bytes,
                    memory_bytes_max: limits.memory_bytes_max,
                },
                Fault::TooManyQueries => PluginError::TooManyQueries {
                    activity_queries_max: limits.activity_queries_max,
                },
                Fault::HostQueryFailed(text) => PluginError::HostQueryFailed(text),
                Fault::BadQuery(text) => PluginError::Trap(text),
            };
        }
        if let Some(trap) = error.downcast_ref::<Trap>() {
            return match trap {
                Trap::OutOfFuel => PluginError::OutOfFuel {
                    fuel_max: limits.fuel_max,
                },
                Trap::Interrupt => PluginError::Timeout {
                    timeout_ms: limits.timeout_ms,
                },
                Trap::StackOverflow => PluginError::StackOverflow {
                    stack_bytes_max: limits.stack_bytes_max,
                },
                other => PluginError::Trap(with_guest_words(other.to_string(), state)),
            };
        }
        if error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return PluginError::Busy {
                pooling_slots: limits.pooling_slots,
            };
        }
        let text = format!("{error:#}");
        if text.contains(HOSTCALL_FUEL_EXHAUSTED) {
            return PluginError::OutputTooLarge(format!(
                "the plugin passed more than {} bytes to the host in one go",
                limits.memory_bytes_max
            ));
        }
        PluginError::Trap(with_guest_words(text, state))
    }

    /// Checks imports and exports and links the component to the host.
    fn link(&self, component: &Component) -> Result<MerchantRulesPre<CallState>, UploadError> {
        let ty = component.component_type();
        let forbidden: Vec<&str> = ty
            .imports(&self.engine)
            .map(|(name, _)| name)
            .filter(|name| !ALLOWED_IMPORTS.contains(name))
            .collect();
        if !forbidden.is_empty() {
            return Err(UploadError::ForbiddenImport {
                import: forbidden.join("`, `"),
            });
        }
        let wrong = UploadError::WrongWorld;
        let rules = match component.get_export(None, RULES_EXPORT) {
            Some((ComponentItem::ComponentInstance(_), index)) => index,
            Some(_) => return Err(wrong(format!("export `{RULES_EXPORT}` is not an instance"))),
            None => return Err(wrong(format!("missing export `{RULES_EXPORT}`"))),
        };
        // Type-checks every import against the host's definitions.
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| wrong(format!("imports do not match the host: {e:#}")))?;
        let func = |name: &str| match component.get_export(Some(&rules), name) {
            Some((ComponentItem::ComponentFunc(func), _)) => Ok(func),
            Some(_) => Err(wrong(format!("`{RULES_EXPORT}/{name}` is not a function"))),
            None => Err(wrong(format!("`{RULES_EXPORT}` lacks `{name}`"))),
        };
        let (payment, refund) = (func("decide-payment")?, func("decide-refund")?);
        // The same checks `bindgen!` runs at every instantiation, run once
        // here so that a mistyped export is refused at upload.
        let instance_type = pre.instance_type();
        let mistyped = |name: &str, e: wasmtime::Error| {
            wrong(format!("`{RULES_EXPORT}/{name}` has the wrong type: {e:#}"))
        };
        payment
            .typecheck::<(&wit::PaymentRequest,), (wit::PaymentDecision,)>(&instance_type)
            .map_err(|e| mistyped("decide-payment", e))?;
        refund
            .typecheck::<(&wit::RefundRequest,), (wit::RefundDecision,)>(&instance_type)
            .map_err(|e| mistyped("decide-refund", e))?;
        MerchantRulesPre::new(pre).map_err(|e| wrong(format!("{e:#}")))
    }

    /// Checks a plugin version's configuration against the limits, as
    /// [`Runtime::load`] will; call it at upload to refuse early.
    pub fn check_config(&self, config: &BTreeMap<String, String>) -> Result<(), UploadError> {
        let limits = &self.limits;
        if config.len() > limits.config_entries_max {
            return Err(UploadError::ConfigTooLarge(format!(
                "{} entries, at most {} allowed",
                config.len(),
                limits.config_entries_max
            )));
        }
        let bytes: usize = config.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > limits.config_bytes_max {
            return Err(UploadError::ConfigTooLarge(format!(
                "{bytes} bytes, at most {} allowed",
                limits.config_bytes_max
            )));
        }
        Ok(())
    }
}

/// The longest trap text kept: it ends up in a decline message.
const TRAP_TEXT_BYTES_MAX: usize = 1024;

/// Adds the guest's last error-level log line (its panic message, if the
/// SDK's panic handler ran) to a trap's text, bounded.
fn with_guest_words(text: String, state: &CallState) -> String {
    let mut text = match &state.log.last_error {
        Some(said) => format!("{text}; the plugin logged: {said}"),
        None => text,
    };
    text.truncate(host::floor_char_boundary(&text, TRAP_TEXT_BYTES_MAX));
    text
}

/// Tells a core module, text and random bytes apart from a component
/// before the compiler sees them, so the refusal says which it is.
fn check_header(wasm: &[u8]) -> Result<(), UploadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    let not = UploadError::NotAComponent;
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        let text = std::str::from_utf8(&wasm[..wasm.len().min(64)]).unwrap_or("");
        if text.trim_start().starts_with('(') {
            return Err(not(
                "this is WebAssembly text; upload the binary component (`wasm-tools parse`)".into(),
            ));
        }
        return Err(not(
            "not WebAssembly at all (a WebAssembly binary starts with `\\0asm`)".into(),
        ));
    }
    match <[u8; 4]>::try_from(&wasm[4..8]) {
        Ok(CORE_MODULE) => Err(not(
            "this is a core WebAssembly module; build a component for the merchant-rules world \
             (`cargo build --target wasm32-wasip2` with the SDK, or `wasm-tools component new`)"
                .into(),
        )),
        Ok(COMPONENT) => Ok(()),
        _ => Err(not(format!(
            "unknown WebAssembly version/layer {:02x?}",
            &wasm[4..8]
        ))),
    }
}

/// With [`MemoryReset::Scan`], how much of a slot's memory may stay
/// resident between calls. It covers what the SDK's guests touch per call
/// (their stack ends at 1 MiB, data and heap follow), so nothing is
/// unmapped. Only touched pages are copied back, so a larger figure costs
/// resident memory (at most this per slot), not time. Measured in the
/// daemon (`BENCHMARKS.md`, "Plugin memory reset without TLB shootdowns"):
/// plugin call p50 44 µs to 25 µs, closed loop +7 to +13%; 16 MiB did no
/// better than 4 MiB.
pub const SCAN_KEEP_RESIDENT_BYTES: usize = 4 * 1024 * 1024;

/// With [`MemoryReset::Madvise`], how much of a slot's memory (and table) is
/// reset by `memset` whether or not a call touched it. Measured on the
/// example plugins (`BENCHMARKS.md`): 64 KiB cut the p99 by about a third
/// against 0; 1 MiB was slower than both, resetting pages that calls never
/// touch.
const MADVISE_KEEP_RESIDENT_BYTES: usize = 64 * 1024;

/// The engine, and how it resets pooled memory: `limits.memory_reset`, with
/// `Auto` resolved (wasmtime refuses `Enabled::Yes` on a kernel without the
/// scan, and `Auto` then takes `Madvise`).
fn new_engine(limits: &Limits) -> Result<(Engine, MemoryReset), RuntimeError> {
    let engine = |reset| {
        Engine::new(&engine_config(limits, reset))
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))
    };
    let scan_failed = |error: RuntimeError| match error {
        RuntimeError::Engine(e) => RuntimeError::Engine(format!(
            "plugins.memory_reset = \"scan\": {e} (it needs Linux 6.7 or later; use \"auto\" or \"madvise\")"
        )),
        other => other,
    };
    match limits.memory_reset {
        // On demand, each call maps fresh memory and unmaps it after: no
        // slot to reset, whatever the setting says.
        _ if limits.pooling_slots == 0 => Ok((engine(MemoryReset::Madvise)?, MemoryReset::Madvise)),
        MemoryReset::Madvise => Ok((engine(MemoryReset::Madvise)?, MemoryReset::Madvise)),
        MemoryReset::Scan => Ok((
            engine(MemoryReset::Scan).map_err(scan_failed)?,
            MemoryReset::Scan,
        )),
        MemoryReset::Auto => match engine(MemoryReset::Scan) {
            Ok(found) => Ok((found, MemoryReset::Scan)),
            Err(error) => {
                tracing::info!(%error, "no PAGEMAP_SCAN here: pooled plugin memory is reset with madvise");
                Ok((engine(MemoryReset::Madvise)?, MemoryReset::Madvise))
            }
        },
    }
}

/// The engine every plugin runs on, resetting pooled memory by `reset`.
fn engine_config(limits: &Limits, reset: MemoryReset) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Component-model async is compiled out (no `component-model-async`
    // feature); say so explicitly, since 48 defaults it on where compiled in
    // and it had a sandbox-escape class bug.
    config.concurrency_support(false);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    // A decline carries the trap code and the guest's own panic text; frame
    // lists of a stripped guest would be shown to no one, so traps do not
    // pay to capture them.
    config.wasm_backtrace_max_frames(None);
    config.max_wasm_stack(limits.stack_bytes_max);
    // Each call maps the plugin's initial memory copy-on-write instead of
    // copying its data segments.
    config.memory_init_cow(true);
    // Same input, same output: no relaxed SIMD (its results vary by CPU),
    // and NaNs canonicalized so float bits do not depend on the CPU either.
    config.wasm_relaxed_simd(false);
    config.cranelift_nan_canonicalization(true);
    // Nothing a pricing rule needs, and less surface.
    config.wasm_memory64(false);
    config.wasm_multi_memory(false);
    if limits.pooling_slots > 0 {
        let slots = limits.pooling_slots;
        // Each pooled memory reserves what a plugin may use
        // (`memory_bytes_max`), not wasmtime's 4 GiB: guest code then checks
        // its memory bounds itself (a compare per access: the plugin call's
        // p50 went from 16 to 17-18 µs in the bench), and a slot's address
        // space falls from about 16 GiB to about 190 MiB, so that the
        // default of 1,024 slots reserves less than 16 did before
        // (BENCHMARKS.md, "1,024 slots by default").
        config.memory_reservation(limits.memory_bytes_max as u64);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * host::CORE_INSTANCES_MAX as u32)
            .total_memories(slots * host::MEMORIES_MAX as u32)
            .total_tables(slots * host::TABLES_MAX as u32)
            .max_memory_size(limits.memory_bytes_max)
            .table_keep_resident(MADVISE_KEEP_RESIDENT_BYTES)
            // Every pooled memory and table may stay warm for the plugin it
            // last served (wasmtime keeps 100 by default, split between its
            // shards), so that raising `pooling_slots` to cover many
            // merchants does keep each one's instance warm: with 1,000
            // merchants, 2,048 slots gave 1.26x the throughput of 16, at the
            // same resident memory for the `fee` example (BENCHMARKS.md). A
            // warm slot keeps what its plugin touched resident, up to
            // SCAN_KEEP_RESIDENT_BYTES with `scan`.
            .max_unused_warm_slots(slots * host::MEMORIES_MAX.max(host::TABLES_MAX) as u32);
        match reset {
            MemoryReset::Scan => pool
                .pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(SCAN_KEEP_RESIDENT_BYTES),
            MemoryReset::Madvise | MemoryReset::Auto => pool
                .pagemap_scan(Enabled::No)
                .linear_memory_keep_resident(MADVISE_KEEP_RESIDENT_BYTES),
        };
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread
/// (tighter than an async interval) until dropped.
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasmpay-epoch".into())
            .spawn(move || {
                // Ends when the sender is dropped (or sends).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only loops on a channel; it cannot panic.
            let _ = thread.join();
        }
    }
}

/// Feeds `Hash` output into SHA-256, so the engine hash is a stable digest
/// rather than `DefaultHasher`'s unspecified algorithm.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(
            digest[..8]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process named like the ticker. Only this test makes
    /// runtimes in the unit-test binary, so the count is its own.
    fn tickers() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                    .filter(|name| name.trim() == "wasmpay-epoch")
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn dropping_the_runtime_stops_its_epoch_ticker() {
        let before = tickers();
        let runtimes: Vec<Runtime> = (0..3)
            .map(|_| Runtime::new(Limits::default()).unwrap())
            .collect();
        // A thread names itself once it runs, so give them a moment.
        let named = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            tickers() == before + 3
        });
        assert!(named, "{} tickers, expected {}", tickers(), before + 3);
        // Drop joins the thread. The kernel wakes a joiner as the thread
        // leaves its memory, a moment before its `/proc` entry goes, so
        // allow that moment; a ticker left running would never go.
        drop(runtimes);
        let gone = (0..100).any(|_| {
            tickers() == before || {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
        });
        assert!(gone, "{} tickers, expected {before}", tickers());
    }

    #[test]
    fn limits_that_cannot_work_are_refused_all_at_once() {
        let error = Runtime::new(Limits {
            fuel_max: 0,
            timeout_ms: 0,
            ..Limits::default()
        })
        .unwrap_err();
        let RuntimeError::InvalidLimits(problems) = error else {
            panic!("expected invalid limits");
        };
        assert_eq!(problems.len(), 2);
    }
}
