//! Hostile fixture `memory_bomb`: allocates 1 MiB blocks without end. The host's memory limit must stop it; see `README.md`.
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

/// Keeps every block alive, behind `black_box` so the optimiser cannot drop
/// the allocations. The blocks are reserved, not filled: the host's limit
/// is on `memory.grow`, which the allocator calls for reserved capacity all
/// the same, while filling cost about one unit of fuel per byte, so that an
/// 11M fuel budget ran out before 16 MiB of memory did.
fn explode() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(Vec::with_capacity(BLOCK_BYTES)));
        black_box(&hoard);
    }
}

wasmpay_plugin_sdk::export_rules!(MemoryBomb);
