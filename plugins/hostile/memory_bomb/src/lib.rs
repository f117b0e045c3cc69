//! Hostile fixture `memory_bomb`: allocates and touches 1 MiB blocks without
//! end. The host's memory limit must stop it; see `README.md`.
#![no_std]

use core::hint::black_box;
use wasmpay_plugin_sdk::prelude::*;

/// Each allocation: large enough to reach any limit in few steps, small
/// enough that the limit, not one absurd request, is what fails.
const BLOCK_BYTES: usize = 1 << 20;

struct MemoryBomb;

impl Rules for MemoryBomb {
    fn decide_payment<H: Host>(_host: &H, _request: &PaymentRequest) -> Result<Quote, Decline> {
        explode()
    }

    fn decide_refund<H: Host>(
        _host: &H,
        _request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        explode()
    }
}

/// Keeps every block alive and writes to each of its pages, so neither the
/// optimiser nor a lazy allocator can skip the memory.
fn explode() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let block = black_box(vec![0xA5_u8; BLOCK_BYTES]);
        hoard.push(block);
        black_box(&hoard);
    }
}

wasmpay_plugin_sdk::export_rules!(MemoryBomb);
