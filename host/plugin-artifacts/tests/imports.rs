//! Checks what each built component imports and exports: the host refuses
//! at upload any component that imports more than the `merchant-rules`
//! world, so every example and every hostile fixture meant to be refused for
//! some other reason must import only `wasmpay:plugin/host` (and `types`),
//! `wasi_fs` must import WASI, and only `wrong_world` may lack the `rules`
//! export.

use wasmparser::{ComponentExport, ComponentImport, Parser, Payload, Validator, WasmFeatures};
use wasmpay_plugin_artifacts::{EXAMPLES, HOSTILE};

/// The imports the host accepts.
const WORLD_IMPORTS: &[&str] = &["wasmpay:plugin/host@0.1.0", "wasmpay:plugin/types@0.1.0"];

/// The export every merchant plugin must have.
const RULES_EXPORT: &str = "wasmpay:plugin/rules@0.1.0";

/// The names of the outermost component's imports and exports, after
/// checking that the bytes are a valid component (not a core module).
fn component_interface(name: &str, bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .unwrap_or_else(|error| panic!("{name}: not a valid wasm binary: {error}"));
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested components and modules have imports of their own, satisfied
    // inside the component; only depth 0 faces the host.
    let mut depth = 0_usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.unwrap_or_else(|error| panic!("{name}: {error}")) {
            Payload::Version { encoding, .. } => {
                if depth == 0 {
                    assert_eq!(
                        encoding,
                        wasmparser::Encoding::Component,
                        "{name}: a core module, not a component"
                    );
                }
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let ComponentImport { name: import, .. } =
                        import.unwrap_or_else(|error| panic!("{name}: {error}"));
                    imports.push(import.full_name().into_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let ComponentExport { name: export, .. } =
                        export.unwrap_or_else(|error| panic!("{name}: {error}"));
                    exports.push(export.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn component_imports(name: &str, bytes: &[u8]) -> Vec<String> {
    component_interface(name, bytes).0
}

#[test]
fn every_plugin_but_wasi_fs_imports_only_the_world() {
    for (name, bytes) in EXAMPLES.iter().chain(HOSTILE) {
        if *name == "wasi_fs" {
            continue;
        }
        let imports = component_imports(name, bytes);
        let foreign: Vec<&String> = imports
            .iter()
            .filter(|import| !WORLD_IMPORTS.contains(&import.as_str()))
            .collect();
        assert!(
            foreign.is_empty(),
            "{name} imports {foreign:?} beyond the world"
        );
        println!("{name}: {} bytes, imports {imports:?}", bytes.len());
    }
}

#[test]
fn examples_import_the_host_interface() {
    for (name, bytes) in EXAMPLES {
        let imports = component_imports(name, bytes);
        assert!(
            imports
                .iter()
                .any(|import| import == "wasmpay:plugin/host@0.1.0"),
            "{name} imports {imports:?}"
        );
    }
}

#[test]
fn wasi_fs_imports_wasi() {
    let (name, bytes) = HOSTILE
        .iter()
        .find(|(name, _)| *name == "wasi_fs")
        .expect("the wasi_fs fixture is listed");
    let imports = component_imports(name, bytes);
    assert!(
        imports
            .iter()
            .any(|import| import.starts_with("wasi:filesystem/")),
        "wasi_fs imports {imports:?}"
    );
    println!("{name}: {} bytes, imports {imports:?}", bytes.len());
}

#[test]
fn only_wrong_world_lacks_the_rules_export() {
    for (name, bytes) in EXAMPLES.iter().chain(HOSTILE) {
        let (_, exports) = component_interface(name, bytes);
        let has_rules = exports.iter().any(|export| export == RULES_EXPORT);
        if *name == "wrong_world" {
            assert!(!has_rules, "{name} exports {exports:?}");
            assert!(
                exports
                    .iter()
                    .any(|export| export == "wasmpay:imposter/rules@0.1.0"),
                "{name} exports {exports:?}"
            );
        } else {
            assert!(has_rules, "{name} exports {exports:?}");
        }
    }
}
