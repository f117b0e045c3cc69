//! Hostile fixture `log_spam`: logs megabytes, then answers normally. The
//! host must keep only its log budget and still use the answer; see
//! `README.md`.
#![no_std]

use wasmpay_plugin_sdk::prelude::*;

/// One log call this long: beyond any sane per-call bound.
const GIANT_LINE_BYTES: usize = 1 << 20;

/// Then this many calls of `LINE_BYTES` each: 4 MiB in ordinary-sized lines.
const LINES: usize = 1024;
const LINE_BYTES: usize = 4096;

struct LogSpam;

impl Rules for LogSpam {
    fn decide_payment<H: Host>(host: &H, _request: &PaymentRequest) -> Result<Quote, Decline> {
        spam(host);
        Ok(Quote::empty())
    }

    fn decide_refund<H: Host>(
        host: &H,
        _request: &RefundRequest,
    ) -> Result<Option<Money>, Decline> {
        spam(host);
        Ok(None)
    }
}

fn spam<H: Host>(host: &H) {
    host.warn(&"g".repeat(GIANT_LINE_BYTES));
    let line = "s".repeat(LINE_BYTES);
    for _ in 0..LINES {
        host.info(&line);
    }
}

wasmpay_plugin_sdk::export_rules!(LogSpam);
