//! Writes the seed corpora: `cargo run --example seed_corpora` in `fuzz/`.
//!
//! - `decode`: every protocol fixture (`host/protocol/tests/fixtures/<topic
//!   with . for />/<code>.<description>.json`) on its topic, plus binary
//!   uploads with their user properties, which no fixture covers.
//! - `amount`: everyday and edge amounts in each fuzzed currency.
//! - `component_upload`: the real example components and the two hostile
//!   ones refused at upload, from `wasmpay-plugin-artifacts`.
//!
//! Seeds are a starting point: after a run, `cargo fuzz cmin` keeps only
//! the inputs that add coverage.

use std::fs;
use std::path::{Path, PathBuf};

use wasmpay_fuzz::{AMOUNT_CURRENCIES, AmountInput, DecodeInput};

fn main() -> std::io::Result<()> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    let fixtures = fuzz.join("../host/protocol/tests/fixtures");

    let mut decode = Vec::new();
    for dir in fs::read_dir(&fixtures)? {
        let dir = dir?.path();
        let folder = file_name(&dir);
        let topic = format!("wasmpay/v1/{}", folder.replace('.', "/"));
        for file in fs::read_dir(&dir)? {
            let file = file?.path();
            let payload = fs::read(&file)?;
            let input = DecodeInput {
                topic: topic.clone(),
                user_properties: vec![],
                payload: &payload,
            };
            decode.push((format!("{folder}.{}", file_name(&file)), input.to_bytes()));
        }
    }
    let upload = "wasmpay/v1/merchants/coffee-shop/plugin/upload";
    let property = |key: &str, value: &str| (key.to_owned(), value.to_owned());
    for (name, user_properties) in [
        (
            "binary-upload.ok",
            vec![property("id", "up-1"), property("config.fee_bps", "250")],
        ),
        ("binary-upload.no-id", vec![property("trace", "t-1")]),
        (
            "binary-upload.duplicate-config",
            vec![
                property("id", "up-1"),
                property("config.a", "1"),
                property("config.a", "2"),
            ],
        ),
    ] {
        let input = DecodeInput {
            topic: upload.to_owned(),
            user_properties,
            payload: b"\0asm\x0d\x00\x01\x00",
        };
        decode.push((name.to_owned(), input.to_bytes()));
    }
    write(&corpus.join("decode"), &decode)?;

    let mut amount = Vec::new();
    for currency in AMOUNT_CURRENCIES {
        for text in [
            "0",
            "-0",
            "12.50",
            "-0.01",
            "1000",
            "0.125",
            "1.0001",
            "9223372036854775807",
            "-9223372036854775808",
            "92233720368547758.07",
            "-92233720368547758.08",
        ] {
            let input = AmountInput { currency, text };
            amount.push((format!("{currency}.{text}"), input.to_bytes()));
        }
    }
    write(&corpus.join("amount"), &amount)?;

    let components = [
        ("fee.wasm", wasmpay_plugin_artifacts::FEE),
        ("tiered.wasm", wasmpay_plugin_artifacts::TIERED),
        ("guard.wasm", wasmpay_plugin_artifacts::GUARD),
        (
            "hostile_wrong_world.wasm",
            wasmpay_plugin_artifacts::HOSTILE_WRONG_WORLD,
        ),
        (
            "hostile_wasi_fs.wasm",
            wasmpay_plugin_artifacts::HOSTILE_WASI_FS,
        ),
    ];
    let components: Vec<(String, Vec<u8>)> = components
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec()))
        .collect();
    write(&corpus.join("component_upload"), &components)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|name| name.to_str())
        .expect("fixture names are UTF-8")
        .to_owned()
}

fn write(dir: &Path, seeds: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}
