//! The merchant plugins of `plugins/`, built as WebAssembly components and
//! embedded as bytes, for the host's tests, benchmarks and examples.
//!
//! `build.rs` compiles the whole `plugins/` workspace for `wasm32-wasip2`
//! (install it with `rustup target add wasm32-wasip2`) in a nested cargo
//! with its own target directory, `<target>/wasm-plugins`. Each constant
//! below is one component; the README next to its source
//! (`plugins/examples/<name>/`, `plugins/hostile/<name>/`) says what it does
//! and, for the hostile ones, exactly what the host must do with it.
//!
//! Every component except [`HOSTILE_WASI_FS`] imports nothing outside
//! `wasmpay:plugin/host@0.1.0` (and the `types` interface it uses); the
//! tests in `tests/imports.rs` check it.

/// Example `fee`: a percentage plus fixed fee, capped per currency, as one
/// `fee` line; refunds within a window, less a refund fee.
pub const FEE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fee.wasm"));

/// Example `tiered`: band surcharge or discount, coupon, minimum order, tax
/// routed to the `tax` sub-account and a split.
pub const TIERED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tiered.wasm"));

/// Example `guard`: velocity limits, amount bounds and a payer blocklist;
/// approves with an empty quote or declines with a stable code.
pub const GUARD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guard.wasm"));

/// Hostile: never returns (out of fuel, or the epoch deadline).
pub const HOSTILE_LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_loop.wasm"));

/// Hostile: allocates 1 MiB blocks until the memory limit stops it.
pub const HOSTILE_MEMORY_BOMB: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_memory_bomb.wasm"));

/// Hostile: unbounded recursion (stack overflow trap).
pub const HOSTILE_RECURSION: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_recursion.wasm"));

/// Hostile: panics; logs `plugin panicked: deliberate panic in payment <id>`
/// at error level, then traps.
pub const HOSTILE_PANIC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile_panic.wasm"));

/// Hostile: answers 10 000 lines, 10 000 splits or 4 MiB strings, by
/// `metadata["mode"]` (output size limit).
pub const HOSTILE_GIANT_OUTPUT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_giant_output.wasm"));

/// Hostile: logs about 5 MiB, then approves with an empty quote (log bytes
/// limit).
pub const HOSTILE_LOG_SPAM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_log_spam.wasm"));

/// Hostile: a quote (or refund fee) that breaks one contract rule per
/// `metadata["mode"]` (refund: per `reason`); each must be refused.
pub const HOSTILE_ABSURD_QUOTE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_absurd_quote.wasm"));

/// Hostile: exports `wasmpay:imposter/rules@0.1.0` instead of
/// `wasmpay:plugin/rules@0.1.0` (refused at upload).
pub const HOSTILE_WRONG_WORLD: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_wrong_world.wasm"));

/// Hostile: a `std` guest that reads a file, so it imports `wasi:filesystem`,
/// `wasi:cli` and `wasi:io` (refused at upload, naming the import).
pub const HOSTILE_WASI_FS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hostile_wasi_fs.wasm"));

/// The example plugins by name, for tools and tests that run each one.
pub const EXAMPLES: &[(&str, &[u8])] = &[("fee", FEE), ("tiered", TIERED), ("guard", GUARD)];

/// The hostile fixtures by name (the folder under `plugins/hostile/`).
pub const HOSTILE: &[(&str, &[u8])] = &[
    ("loop", HOSTILE_LOOP),
    ("memory_bomb", HOSTILE_MEMORY_BOMB),
    ("recursion", HOSTILE_RECURSION),
    ("panic", HOSTILE_PANIC),
    ("giant_output", HOSTILE_GIANT_OUTPUT),
    ("log_spam", HOSTILE_LOG_SPAM),
    ("absurd_quote", HOSTILE_ABSURD_QUOTE),
    ("wrong_world", HOSTILE_WRONG_WORLD),
    ("wasi_fs", HOSTILE_WASI_FS),
];
