//! Hostile fixture `wrong_world`: a well-behaved component that exports
//! `wasmpay:imposter/rules@0.1.0` (its own WIT in `wit/`) instead of
//! `wasmpay:plugin/rules@0.1.0`. The host must refuse it at upload for the
//! missing export; see `README.md`.
//!
//! It is `no_std` on the SDK's runtime like a real plugin, so that its
//! imports are acceptable and the export is the only thing wrong with it.
#![no_std]

// Linked for its allocator, `cabi_realloc` and panic handler only.
use wasmpay_plugin_sdk as _;

/// Bindings for the imposter world in this crate's `wit/`. Generated code
/// needs `unsafe` for the canonical ABI.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "imposter",
        path: "wit",
    });
}

struct Imposter;

impl bindings::exports::wasmpay::imposter::rules::Guest for Imposter {
    fn decide_payment(amount_minor_units: i64) -> bool {
        amount_minor_units > 0
    }
}

/// The component's exports. The generated glue needs `unsafe` for the
/// canonical ABI.
#[allow(unsafe_code)]
mod export {
    use super::Imposter;
    crate::bindings::export!(Imposter with_types_in crate::bindings);
}
