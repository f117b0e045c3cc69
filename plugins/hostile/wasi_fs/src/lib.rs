//! Hostile fixture `wasi_fs`: a plugin written the ordinary way, with `std`,
//! that reads a file. Its component imports WASI (filesystem, cli, io), and
//! the host must refuse it at upload naming such an import; see `README.md`.
//!
//! It does not use the SDK: the SDK's panic handler and allocator are for
//! `no_std` guests and would clash with `std`'s.

/// Bindings for the real `merchant-rules` world, generated here rather than
/// taken from the SDK. Generated code needs `unsafe` for the canonical ABI.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "merchant-rules",
        path: "../../../wit",
    });
}

use bindings::exports::wasmpay::plugin::rules::Guest;
use bindings::wasmpay::plugin::types::{
    Decline, PaymentDecision, PaymentRequest, Quote, RefundDecision, RefundRequest,
};

struct WasiFs;

impl Guest for WasiFs {
    fn decide_payment(_request: PaymentRequest) -> PaymentDecision {
        match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => PaymentDecision::Decline(Decline {
                code: "read_host_file".into(),
                message: format!("read {} bytes of /etc/passwd", text.len()),
            }),
            Err(_) => PaymentDecision::Approve(Quote {
                lines: Vec::new(),
                splits: Vec::new(),
            }),
        }
    }

    fn decide_refund(_request: RefundRequest) -> RefundDecision {
        RefundDecision::Allow(None)
    }
}

/// The component's exports. The generated glue needs `unsafe` for the
/// canonical ABI.
#[allow(unsafe_code)]
mod export {
    use super::WasiFs;
    crate::bindings::export!(WasiFs with_types_in crate::bindings);
}
