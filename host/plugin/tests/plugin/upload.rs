//! What an upload must be, and how each refusal names its reason.

use wasmpay_plugin::{Limits, Runtime, UploadError};

use crate::fixtures;

fn refused(wasm: &[u8]) -> UploadError {
    let runtime = Runtime::new(Limits::default()).unwrap();
    runtime.compile(wasm).expect_err("upload must be refused")
}

/// Checks that `wasm` is refused with `code` and a message mentioning each
/// of `words`.
fn check(wasm: &[u8], code: &str, words: &[&str]) {
    let error = refused(wasm);
    assert_eq!(error.code(), code, "{error}");
    let message = error.to_string();
    for word in words {
        assert!(
            message.contains(word),
            "`{message}` should mention `{word}`"
        );
    }
}

#[test]
fn a_component_implementing_the_world_compiles_and_loads() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let wasm = fixtures::answering(fixtures::DECLINE);
    let compiled = runtime.compile(&wasm).unwrap();
    assert_eq!(compiled.sha256.len(), 64);
    assert!(
        compiled
            .sha256
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let plugin = fixtures::load(&runtime, &wasm, 1);
    assert_eq!(plugin.plugin_ref().sha256, compiled.sha256);
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let module = fixtures::component(r#"(module (func (export "decide-payment")))"#);
    check(&module, "not_a_component", &["core WebAssembly module"]);
}

#[test]
fn random_bytes_and_text_are_refused_as_not_a_component() {
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    check(&noise, "not_a_component", &["not WebAssembly"]);
    check(b"", "not_a_component", &["not WebAssembly"]);
    check(b"(component)", "not_a_component", &["WebAssembly text"]);
    // The right magic with garbage after it gets as far as the compiler.
    let mut truncated = fixtures::answering(fixtures::DECLINE);
    truncated.truncate(100);
    check(&truncated, "compile_failed", &[]);
}

#[test]
fn a_component_over_the_size_limit_is_refused_before_parsing() {
    let runtime = Runtime::new(Limits {
        component_bytes_max: 1024,
        ..Limits::default()
    })
    .unwrap();
    let error = runtime.compile(&vec![0; 1025]).unwrap_err();
    assert_eq!(error.code(), "component_too_large");
    assert!(error.to_string().contains("1025"), "{error}");
}

#[test]
fn a_component_importing_wasi_is_refused_with_the_import_named() {
    let wasm = fixtures::component(
        r#"(component
          (import "wasi:filesystem/preopens@0.2.0" (instance
            (export "get-directories" (func (result (list string))))))
          (import "wasi:cli/environment@0.2.0" (instance
            (export "get-arguments" (func (result (list string)))))))"#,
    );
    check(
        &wasm,
        "forbidden_import",
        &[
            "wasi:filesystem/preopens@0.2.0",
            "wasi:cli/environment@0.2.0",
        ],
    );
}

#[test]
fn a_component_without_the_rules_export_is_refused_with_what_is_missing() {
    check(
        &fixtures::component("(component)"),
        "wrong_world",
        &["missing export `wasmpay:plugin/rules@0.1.0`"],
    );
}

#[test]
fn a_rules_export_lacking_a_function_is_refused_naming_it() {
    let wasm = fixtures::component(
        r#"(component
          (core module $m (func (export "f")))
          (core instance $i (instantiate $m))
          (func $f (canon lift (core func $i "f")))
          (instance $rules (export "decide-payment" (func $f)))
          (export "wasmpay:plugin/rules@0.1.0" (instance $rules)))"#,
    );
    check(&wasm, "wrong_world", &["decide-refund"]);
}

#[test]
fn a_rules_export_with_the_wrong_function_types_is_refused() {
    let wasm = fixtures::component(
        r#"(component
          (core module $m (func (export "f")))
          (core instance $i (instantiate $m))
          (func $f (canon lift (core func $i "f")))
          (instance $rules (export "decide-payment" (func $f)) (export "decide-refund" (func $f)))
          (export "wasmpay:plugin/rules@0.1.0" (instance $rules)))"#,
    );
    check(&wasm, "wrong_world", &["decide-payment", "wrong type"]);
}

#[test]
fn a_host_import_with_the_wrong_type_is_refused() {
    let wasm = fixtures::component(
        r#"(component
          (import "wasmpay:plugin/host@0.1.0" (instance
            (export "log" (func (param "message" u32))))))"#,
    );
    check(&wasm, "wrong_world", &[]);
}

#[test]
fn an_artifact_from_elsewhere_is_refused_at_load() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let error = runtime
        .load(
            b"\x7fELF not ours",
            wasmpay_plugin::PluginMeta {
                merchant: fixtures::merchant(),
                version: 1,
                sha256: "0".repeat(64),
                config: Default::default(),
            },
        )
        .unwrap_err();
    assert_eq!(error.code(), "artifact_invalid", "{error}");
}

#[test]
fn the_engine_hash_is_stable_across_runtimes_with_the_same_config() {
    let a = Runtime::new(Limits::default()).unwrap();
    let b = Runtime::new(Limits::default()).unwrap();
    assert_eq!(a.engine_hash(), b.engine_hash());
    assert_eq!(a.engine_hash().len(), 64);
    // Artifacts from one load in the other.
    let compiled = a.compile(&fixtures::answering(fixtures::DECLINE)).unwrap();
    let meta = wasmpay_plugin::PluginMeta {
        merchant: fixtures::merchant(),
        version: 1,
        sha256: compiled.sha256.clone(),
        config: Default::default(),
    };
    b.load(&compiled.artifact, meta).unwrap();
}
