//! `wasmpay_plugin::Runtime::compile` on arbitrary bytes, as they would
//! arrive in a merchant's plugin upload.
//!
//! Each input is compiled as it is and, unless it already starts with one,
//! again behind a component header (`\0asm`, version 0x0d, layer 1), so that
//! random bytes get past the header check into wasmtime's parser and the
//! host's import/export checks. Either way the answer must be a compiled
//! artifact or a typed `UploadError`, never a panic; and an artifact the
//! host compiled must load, since the daemon stores it and loads it later.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmpay_domain::MerchantId;
use wasmpay_plugin::{Limits, PluginMeta, Runtime};

/// The preamble of every component.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// One engine per process, as in the daemon: building one per input would
/// measure engine setup instead of compilation.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(Limits::default()).expect("default limits are valid"))
}

fn check(wasm: &[u8]) {
    let runtime = runtime();
    let Ok(compiled) = runtime.compile(wasm) else {
        return;
    };
    assert_eq!(compiled.sha256.len(), 64, "{compiled:?}");
    let meta = PluginMeta {
        merchant: MerchantId::new("fuzz").expect("valid"),
        version: 1,
        sha256: compiled.sha256.clone(),
        config: BTreeMap::new(),
    };
    if let Err(error) = runtime.load(&compiled.artifact, meta) {
        panic!("compiled but does not load: {error}");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if !data.starts_with(COMPONENT_HEADER) {
        check(&[COMPONENT_HEADER, data].concat());
    }
});
