//! What can go wrong with a plugin, as typed errors with stable codes.
//!
//! Two families: [`UploadError`] when a component is refused at upload (or
//! its stored artifact cannot be loaded), and [`PluginError`] when a call
//! fails. A call failure is a guest failure, never a host crash: the
//! pipeline declines the payment with [`PluginError::code`] and the message.
//! [`RuntimeError`] is the operator's: the runtime could not be built.

/// Why a call to a plugin produced no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The call burned all its fuel (instructions).
    #[error("plugin ran out of fuel: it used all {fuel_max} units allowed per call")]
    OutOfFuel { fuel_max: u64 },
    /// The call ran past its wall-clock deadline.
    #[error("plugin timed out: it ran longer than {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The instance tried to grow its linear memory past the limit.
    #[error(
        "plugin hit the memory limit: it asked for {requested_bytes} bytes of linear memory, at most {memory_bytes_max} are allowed"
    )]
    MemoryLimit {
        requested_bytes: usize,
        memory_bytes_max: usize,
    },
    /// The wasm stack overflowed (usually unbounded recursion).
    #[error("plugin overflowed its stack of {stack_bytes_max} bytes")]
    StackOverflow { stack_bytes_max: usize },
    /// Any other trap: `unreachable` (a guest panic), an out-of-bounds
    /// access, a division by zero, a bad canonical ABI value. The message
    /// includes the guest's last error log line (its panic text) if any.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The decision, or one import call's arguments, is larger than the
    /// host accepts; the text says which limit and by how much.
    #[error("plugin output too large: {0}")]
    OutputTooLarge(String),
    /// The answer is well-typed but breaks a rule of the contract (a code
    /// with capital letters, an unknown currency, a text too long).
    #[error("plugin answered nonsense: {0}")]
    MalformedOutput(String),
    /// The plugin asked `payer-activity` more often than allowed.
    #[error("plugin asked payer-activity more than {activity_queries_max} times in one call")]
    TooManyQueries { activity_queries_max: u32 },
    /// The host could not answer a query (a failed ledger read). Not the
    /// plugin's fault: the pipeline may retry.
    #[error("host query failed: {0}")]
    HostQueryFailed(String),
    /// Every instance slot of the pooling allocator is in use. Not the
    /// plugin's fault: the host is saturated.
    #[error("no free plugin instance slot: all {pooling_slots} are in use")]
    Busy { pooling_slots: u32 },
}

impl PluginError {
    /// The stable, machine-readable decline code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OutOfFuel { .. } => "plugin_out_of_fuel",
            Self::Timeout { .. } => "plugin_timeout",
            Self::MemoryLimit { .. } => "plugin_memory_limit",
            Self::StackOverflow { .. } => "plugin_stack_overflow",
            Self::Trap(_) => "plugin_trap",
            Self::OutputTooLarge(_) => "plugin_output_too_large",
            Self::MalformedOutput(_) => "plugin_malformed_output",
            Self::TooManyQueries { .. } => "plugin_too_many_queries",
            Self::HostQueryFailed(_) => "plugin_host_query_failed",
            Self::Busy { .. } => "plugin_busy",
        }
    }

    /// Whether the failure is the host's rather than the plugin's, so that
    /// the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::HostQueryFailed(_) | Self::Busy { .. })
    }
}

/// Why a component was refused at upload, or its stored artifact at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("component of {size_bytes} bytes is larger than the {component_bytes_max} allowed")]
    ComponentTooLarge {
        size_bytes: usize,
        component_bytes_max: usize,
    },
    /// A core module, text, or random bytes.
    #[error("not a component: {0}")]
    NotAComponent(String),
    /// The component imports something the host does not grant.
    #[error(
        "forbidden import `{import}`: a plugin may import only `wasmpay:plugin/host@0.1.0` (and its `types`)"
    )]
    ForbiddenImport { import: String },
    /// The component does not implement the `merchant-rules` world.
    #[error("does not implement wasmpay:plugin/merchant-rules@0.1.0: {0}")]
    WrongWorld(String),
    /// Validation or code generation failed.
    #[error("compile failed: {0}")]
    CompileFailed(String),
    /// A stored artifact does not deserialize with this engine.
    #[error("stored artifact cannot be loaded: {0}")]
    ArtifactInvalid(String),
    #[error("plugin configuration too large: {0}")]
    ConfigTooLarge(String),
}

impl UploadError {
    /// The stable, machine-readable refusal code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ComponentTooLarge { .. } => "component_too_large",
            Self::NotAComponent(_) => "not_a_component",
            Self::ForbiddenImport { .. } => "forbidden_import",
            Self::WrongWorld(_) => "wrong_world",
            Self::CompileFailed(_) => "compile_failed",
            Self::ArtifactInvalid(_) => "artifact_invalid",
            Self::ConfigTooLarge(_) => "config_too_large",
        }
    }
}

/// Why the runtime could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid plugin limits: {}", .0.join("; "))]
    InvalidLimits(Vec<String>),
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
}
