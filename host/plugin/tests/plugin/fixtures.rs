//! Small components written in the WebAssembly text format, one behaviour
//! each, so that every host path can be tested without a guest toolchain.
//!
//! [`rules`] builds a component that implements the `merchant-rules` world
//! by hand: the WIT types, a bump allocator, the `log` and `payer-activity`
//! imports lowered into a core module, and `decide-payment` whose body is
//! the caller's. The answers it can return sit at fixed addresses, laid out
//! in the canonical ABI (see the constants).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmpay_domain::{Currency, MerchantId, Money, PaymentId, UserId};
use wasmpay_plugin::{LoadedPlugin, PaymentInput, PluginMeta, Runtime};

/// `decide-payment` returns this address to decline with
/// `declined_by_test` / "a message".
pub const DECLINE: i32 = 256;
/// ... to approve with an empty quote (the bytes are all zero).
pub const APPROVE_EMPTY: i32 = 320;
/// ... to approve with one `service_fee` line of 0.30 EUR.
pub const APPROVE_FEE: i32 = 1024;
/// ... to decline with the code `Bad Code`, which breaks the code rule.
pub const DECLINE_BAD_CODE: i32 = 384;
/// ... to approve with 900 zeroed lines (at 8192, below the allocator's
/// heap): well-typed, but larger than the default output limit once the
/// host holds it.
pub const APPROVE_GIANT: i32 = 448;

/// The WIT types of `wasmpay:plugin/types`, exported so that the function
/// types below are named, as the component model requires.
const TYPES: &str = r#"
  (type $money' (record (field "minor-units" s64) (field "currency" string)))
  (export $money "money" (type $money'))
  (type $line-kind' (enum "fee" "discount" "surcharge" "tax" "tip"))
  (export $line-kind "line-kind" (type $line-kind'))
  (type $quote-line' (record (field "kind" $line-kind) (field "code" string)
    (field "description" string) (field "amount" $money) (field "account" (option string))))
  (export $quote-line "quote-line" (type $quote-line'))
  (type $split' (record (field "account" string) (field "amount" $money)))
  (export $split "split" (type $split'))
  (type $quote' (record (field "lines" (list $quote-line)) (field "splits" (list $split))))
  (export $quote "quote" (type $quote'))
  (type $decline' (record (field "code" string) (field "message" string)))
  (export $decline "decline" (type $decline'))
  (type $payment-request' (record
    (field "payment-id" string) (field "merchant" string) (field "payer" string)
    (field "amount" $money) (field "currency-exponent" u8) (field "memo" (option string))
    (field "metadata" (list (tuple string string))) (field "received-at-ms" s64)
    (field "is-authorization" bool)))
  (export $payment-request "payment-request" (type $payment-request'))
  (type $payment-decision' (variant (case "approve" $quote) (case "decline" $decline)))
  (export $payment-decision "payment-decision" (type $payment-decision'))
  (type $refund-request' (record
    (field "payment-id" string) (field "merchant" string) (field "payer" string)
    (field "captured" $money) (field "refunded" $money) (field "amount" $money)
    (field "currency-exponent" u8) (field "reason" (option string))
    (field "received-at-ms" s64) (field "captured-at-ms" s64)))
  (export $refund-request "refund-request" (type $refund-request'))
  (type $refund-decision' (variant (case "allow" (option $money)) (case "deny" $decline)))
  (export $refund-decision "refund-decision" (type $refund-decision'))
"#;

/// The host interface as the plugin imports it (two of its three functions).
const HOST_IMPORT: &str = r#"
  (import "wasmpay:plugin/host@0.1.0" (instance $host
    (type $level' (enum "debug" "info" "warn" "error"))
    (export "log-level" (type $level (eq $level')))
    (type $money' (record (field "minor-units" s64) (field "currency" string)))
    (export "money" (type $money (eq $money')))
    (type $activity' (record (field "count" u32) (field "volume" $money)))
    (export "activity" (type $activity (eq $activity')))
    (export "log" (func (param "level" $level) (param "message" string)))
    (export "payer-activity" (func (param "window-seconds" u32) (param "currency" string)
      (result $activity)))
  ))
"#;

/// Memory and allocator live in their own module so that the lowered
/// imports (which need the memory) can be handed to the main module.
const LIBC: &str = r#"
  (core module $libc-module
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 61440))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $at) (local.get 3)))
      (local.get $at)))
  (core instance $libc (instantiate $libc-module))
  (core func $log (canon lower (func $host "log") (memory (core memory $libc "memory"))))
  (core func $activity (canon lower (func $host "payer-activity")
    (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (core instance $imports (export "log" (func $log)) (export "payer-activity" (func $activity)))
"#;

/// The answers and strings at their fixed addresses. A payment decision is
/// a u8 case, then (at 4) two pointer/length pairs; a quote line is 56
/// bytes, 8-aligned.
const DATA: &str = r#"
    (data (i32.const 16) "declined_by_test")
    (data (i32.const 64) "a message")
    (data (i32.const 128) "hello from guest")
    (data (i32.const 160) "service_fee")
    (data (i32.const 176) "Service fee")
    (data (i32.const 192) "EUR")
    (data (i32.const 200) "Bad Code")
    (data (i32.const 256) "\01\00\00\00" "\10\00\00\00" "\10\00\00\00" "\40\00\00\00" "\09\00\00\00")
    (data (i32.const 384) "\01\00\00\00" "\c8\00\00\00" "\08\00\00\00" "\40\00\00\00" "\09\00\00\00")
    (data (i32.const 448) "\00\00\00\00" "\00\20\00\00" "\84\03\00\00" "\00\00\00\00" "\00\00\00\00")
    (data (i32.const 1024) "\00\00\00\00" "\50\04\00\00" "\01\00\00\00" "\00\00\00\00" "\00\00\00\00")
    (data (i32.const 1104) "\00\00\00\00" "\a0\00\00\00" "\0b\00\00\00" "\b0\00\00\00" "\0b\00\00\00"
      "\00\00\00\00" "\1e\00\00\00\00\00\00\00" "\c0\00\00\00" "\03\00\00\00" "\00\00\00\00")
"#;

/// A component implementing `merchant-rules` whose `decide-payment` core
/// function (`(param $request i32) (result i32)`, returning the address of
/// its answer) has `body` as its body. `$log (level ptr len)` and
/// `$recurse` are in scope; `decide-refund` always allows without a fee.
pub fn rules(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  {HOST_IMPORT}
  {TYPES}
  {LIBC}
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "host" "log" (func $log (param i32 i32 i32)))
    (import "host" "payer-activity" (func $activity (param i32 i32 i32 i32)))
    {DATA}
    (func $recurse (param i32) (result i32)
      (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
    (func (export "decide-payment") (param $request i32) (result i32)
      {body})
    (func (export "decide-refund") (param i32) (result i32)
      (i32.const 512)))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc)) (with "host" (instance $imports))))
  (func $decide-payment (param "request" $payment-request) (result $payment-decision)
    (canon lift (core func $main "decide-payment")
      (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (func $decide-refund (param "request" $refund-request) (result $refund-decision)
    (canon lift (core func $main "decide-refund")
      (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (instance $rules
    (export "decide-payment" (func $decide-payment))
    (export "decide-refund" (func $decide-refund)))
  (export "wasmpay:plugin/rules@0.1.0" (instance $rules))
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

/// A component that answers with the value at `address` and does nothing
/// else.
pub fn answering(address: i32) -> Vec<u8> {
    rules(&format!("(i32.const {address})"))
}

/// Parses a fixture given in full.
pub fn component(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

pub fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("EUR").unwrap())
}

pub fn merchant() -> MerchantId {
    MerchantId::new("shop-1").unwrap()
}

/// A 12.50 EUR payment from alice to shop-1.
pub fn payment() -> PaymentInput {
    PaymentInput {
        payment_id: PaymentId::new("pay_test").unwrap(),
        merchant: merchant(),
        payer: UserId::new("alice").unwrap(),
        amount: eur(1250),
        memo: None,
        metadata: BTreeMap::new(),
        received_at_ms: 1_700_000_000_000,
        is_authorization: false,
    }
}

/// Compiles and loads `wasm` as version `version` of shop-1's plugin.
pub fn load(runtime: &Runtime, wasm: &[u8], version: u32) -> Arc<LoadedPlugin> {
    let compiled = runtime.compile(wasm).expect("fixture compiles");
    runtime
        .load(
            &compiled.artifact,
            PluginMeta {
                merchant: merchant(),
                version,
                sha256: compiled.sha256,
                config: BTreeMap::new(),
            },
        )
        .expect("fixture loads")
}
