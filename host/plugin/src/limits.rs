//! The limits every plugin call and upload runs under.
//!
//! A merchant's plugin is untrusted code running inside the payment host, so
//! everything it can consume has a bound: instructions, wall time, memory,
//! stack, the size of its answer, its logs, and the host queries it makes.
//! Each limit is a field of [`Limits`], read from the operator's config with a
//! default that says why it is what it is. Units are the last word of every
//! name.

use serde::{Deserialize, Serialize};

/// One KiB, for readable defaults.
const KIB: usize = 1024;
/// One MiB, for readable defaults.
const MIB: usize = 1024 * KIB;

/// The smallest linear memory worth allowing: one WebAssembly page.
const WASM_PAGE_BYTES: usize = 64 * KIB;

/// The largest wasm stack the config may ask for. Guest code runs on the
/// calling thread's native stack, and tokio's worker threads have 2 MiB; a
/// wasm stack near that size would overflow the host thread instead of
/// trapping in the guest.
pub const STACK_BYTES_CEILING: usize = MIB;

/// Limits on plugin calls and uploads. Missing fields take their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Fuel units (about one per wasm instruction) a call may burn,
    /// instantiation included. Shopify Functions allow 11 million; our
    /// example plugins use well under one percent of that (see
    /// `BENCHMARKS.md`), so the default leaves room for real rules while
    /// bounding a hostile loop to a few milliseconds.
    pub fuel_max: u64,
    /// Wall-clock backstop per call in milliseconds, enforced by epoch
    /// interruption. Fuel is the deterministic limit; this one catches what
    /// fuel does not count (slow host queries returning into a loop, fuel
    /// accounting gaps) and is set well above what `fuel_max` takes.
    pub timeout_ms: u64,
    /// Total linear memory of one call's instance, in bytes. 16 MiB is ample
    /// for pricing rules and small enough that many calls run at once.
    pub memory_bytes_max: usize,
    /// Wasm stack per call in bytes, at most [`STACK_BYTES_CEILING`].
    /// Deep recursion traps as a stack overflow at this depth.
    pub stack_bytes_max: usize,
    /// Size of the decision a plugin returns, in bytes: what the host holds
    /// for it (each line, split and decline at its in-memory size, plus the
    /// bytes of every string). A quote is a few hundred bytes; 64 KiB is
    /// far more than the 32 lines and 16 splits a quote may have.
    ///
    /// Separately, wasmtime never copies more than `memory_bytes_max` out of
    /// a guest in one go (its "hostcall fuel"), so a decision whose entries
    /// all point at the same large string, or an import call with a huge
    /// argument, fails before the host allocates for it.
    pub output_bytes_max: usize,
    /// Log bytes kept per call, each line counted at its length plus a small
    /// fixed overhead; later lines are dropped and the log marked truncated.
    pub log_bytes_max: usize,
    /// Longest log line kept, in bytes; longer lines are cut (at a character
    /// boundary) and the log marked truncated.
    pub log_line_bytes_max: usize,
    /// Largest component accepted at upload, in bytes. Compile time grows
    /// with size; our examples are a few tens of KiB.
    pub component_bytes_max: usize,
    /// Most configuration entries a plugin version may carry.
    pub config_entries_max: usize,
    /// Most configuration bytes (keys plus values) a plugin version may carry.
    pub config_bytes_max: usize,
    /// Most `payer-activity` queries per call. Each is a ledger read the
    /// host does on the plugin's behalf, so they are bounded separately from
    /// fuel, which does not count host work.
    pub activity_queries_max: u32,
    /// Calls that may run at once on the pooling allocator, whose slots
    /// (memories, tables, instances) are reserved up front and reused from
    /// call to call; 0 maps and unmaps each call's memory instead. A call
    /// that finds every slot busy fails with `plugin_busy`, so the daemon
    /// requires at least one slot per plugin worker. Pooling is on by
    /// default: in the end-to-end benchmark the per-call `munmap` of the
    /// on-demand scheme (with its TLB shootdowns across the daemon's
    /// threads) was a third of each plugin call's CPU (`BENCHMARKS.md`). A
    /// free slot stays warm for the code it last ran (shared by every
    /// merchant running that component), so a daemon serving many distinct
    /// components keeps more of them warm with more slots: the default,
    /// 1,024, kept 1,000 merchants loaded apart at 0.81-0.96 of one
    /// merchant's throughput (median 0.92), against 0.69-0.88 (median 0.80)
    /// with 16. Each slot
    /// reserves about 190 MiB of address space (4 memories of
    /// `memory_bytes_max` and their guards), none of it committed; a warm
    /// slot keeps the pages its plugin touched resident (up to 4 MiB with
    /// `Scan`), so the resident cost grows with the merchants actually
    /// served, not with this number.
    pub pooling_slots: u32,
    /// How a pooled slot's memory goes back to the plugin's initial
    /// contents between calls (see [`MemoryReset`]). Not a limit: a choice
    /// between two ways wasmtime offers, kept so that an operator can turn
    /// the newer one off.
    pub memory_reset: MemoryReset,
}

/// `plugins.memory_reset`: how a pooled slot's memory is put back to the
/// plugin's initial contents between calls, so that no call sees what the
/// one before it left. With `pooling_slots = 0` each call maps fresh memory
/// instead, and this does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryReset {
    /// `Scan` where the kernel has it, `Madvise` where it has not.
    #[default]
    Auto,
    /// Linux's `PAGEMAP_SCAN` (kernel 6.7 and later) finds the pages a call
    /// touched, and only those are copied back (up to 4 MiB of a slot; past
    /// that they are given back as with `Madvise`); the slot's pages stay
    /// mapped and private. No `madvise` and no copy-on-write fault per
    /// call, so no TLB-shootdown interrupt to the other cores, where the
    /// ledger writer and the broker connection run. Start fails without it.
    Scan,
    /// The lowest 64 KiB are reset in place and the rest is given back with
    /// `madvise`, to be faulted in again (copy-on-write from the plugin's
    /// image) by the next call.
    Madvise,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel_max: 11_000_000,
            timeout_ms: 200,
            memory_bytes_max: 16 * MIB,
            stack_bytes_max: 512 * KIB,
            output_bytes_max: 64 * KIB,
            log_bytes_max: 8 * KIB,
            log_line_bytes_max: KIB,
            component_bytes_max: 4 * MIB,
            config_entries_max: 64,
            config_bytes_max: 16 * KIB,
            activity_queries_max: 8,
            pooling_slots: 1024,
            memory_reset: MemoryReset::Auto,
        }
    }
}

impl Limits {
    /// Every limit that cannot work, all at once, so an operator fixes the
    /// config in one go.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(self.fuel_max > 0, "fuel_max must be positive".into());
        check(self.timeout_ms > 0, "timeout_ms must be positive".into());
        check(
            self.memory_bytes_max >= WASM_PAGE_BYTES,
            format!("memory_bytes_max must be at least one wasm page ({WASM_PAGE_BYTES})"),
        );
        check(
            (64 * KIB..=STACK_BYTES_CEILING).contains(&self.stack_bytes_max),
            format!(
                "stack_bytes_max must be between {} and {STACK_BYTES_CEILING}",
                64 * KIB
            ),
        );
        check(
            self.output_bytes_max >= KIB,
            format!("output_bytes_max must be at least {KIB}"),
        );
        check(
            self.log_line_bytes_max > 0 && self.log_line_bytes_max <= self.log_bytes_max,
            "log_line_bytes_max must be positive and at most log_bytes_max".into(),
        );
        check(
            self.component_bytes_max > 0,
            "component_bytes_max must be positive".into(),
        );
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let limits = Limits {
            fuel_max: 0,
            timeout_ms: 0,
            stack_bytes_max: 8 * MIB,
            ..Limits::default()
        };
        let problems = limits.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn missing_fields_take_defaults_and_unknown_fields_are_refused() {
        let limits: Limits = serde_json::from_str(r#"{"fuel_max": 5}"#).unwrap();
        assert_eq!(limits.fuel_max, 5);
        assert_eq!(limits.timeout_ms, Limits::default().timeout_ms);
        assert!(serde_json::from_str::<Limits>(r#"{"fuel": 5}"#).is_err());
    }

    #[test]
    fn memory_reset_is_named_in_lower_case() {
        let limits: Limits = serde_json::from_str(r#"{"memory_reset": "madvise"}"#).unwrap();
        assert_eq!(limits.memory_reset, MemoryReset::Madvise);
        assert_eq!(Limits::default().memory_reset, MemoryReset::Auto);
        assert!(serde_json::from_str::<Limits>(r#"{"memory_reset": "fast"}"#).is_err());
    }
}
