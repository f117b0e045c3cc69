//! Builds every merchant plugin in `plugins/` (its own Cargo workspace) for
//! `wasm32-wasip2` with a nested `cargo build`, and copies each component
//! into `OUT_DIR` for `src/lib.rs` to embed.
//!
//! The nested build gets its own target directory, `<target>/wasm-plugins`,
//! so that it never waits on the outer build's lock, and an environment
//! cleared of everything the outer cargo set for this build script (target,
//! flags, wrappers such as clippy's, jobserver), which would otherwise
//! redirect or break it.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest target. Its standard library ships with rustup's
/// `wasm32-wasip2` target; `wasm-component-ld` with the toolchain.
const GUEST_TARGET: &str = "wasm32-wasip2";

/// `(file name in OUT_DIR, cargo package of the plugin)`. The library crate
/// of each package is named like it, with `-` as `_`.
const PLUGINS: &[(&str, &str)] = &[
    ("fee.wasm", "wasmpay-example-fee"),
    ("tiered.wasm", "wasmpay-example-tiered"),
    ("guard.wasm", "wasmpay-example-guard"),
    ("hostile_loop.wasm", "wasmpay-hostile-loop"),
    ("hostile_memory_bomb.wasm", "wasmpay-hostile-memory-bomb"),
    ("hostile_recursion.wasm", "wasmpay-hostile-recursion"),
    ("hostile_panic.wasm", "wasmpay-hostile-panic"),
    ("hostile_giant_output.wasm", "wasmpay-hostile-giant-output"),
    ("hostile_log_spam.wasm", "wasmpay-hostile-log-spam"),
    ("hostile_absurd_quote.wasm", "wasmpay-hostile-absurd-quote"),
    ("hostile_wrong_world.wasm", "wasmpay-hostile-wrong-world"),
    ("hostile_wasi_fs.wasm", "wasmpay-hostile-wasi-fs"),
];

/// Variables cargo sets for a build script, or a user sets for the outer
/// build, that must not reach the nested cargo: each would change its target,
/// flags or compiler, or hand it the outer build's jobserver. All other
/// `CARGO_*` variables are removed too unless `keeps_cargo_var` keeps them.
const REMOVED_VARS: &[&str] = &[
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_LINKER",
    "RUSTDOC",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "MAKEFLAGS",
    "MFLAGS",
];

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let repo = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("host/plugin-artifacts sits two levels below the repository root")
        .to_path_buf();
    let plugins = repo.join("plugins");
    let out_dir = PathBuf::from(env_var("OUT_DIR"));

    watch_sources(&plugins, &repo.join("wit"));

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    require_guest_target(&rustc);

    let target_dir = outer_target_dir(&repo).join("wasm-plugins");
    build_plugins(&plugins, &target_dir, &rustc);

    let built = target_dir.join(GUEST_TARGET).join("release");
    for (file_name, package) in PLUGINS {
        let artifact = built.join(format!("{}.wasm", package.replace('-', "_")));
        fs::copy(&artifact, out_dir.join(file_name)).unwrap_or_else(|error| {
            panic!(
                "the plugin build did not produce {}: {error}",
                artifact.display()
            )
        });
    }
}

fn env_var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// Reruns this script when any plugin source, manifest, lock file or WIT
/// file changes. Files are listed one by one, skipping `target/`
/// directories: cargo scans a watched directory recursively, so watching
/// `plugins/` itself would rebuild for build output someone left there. A
/// new source file needs an edit to an existing one (a `mod` line, a
/// workspace member) to take part, and that edit is seen.
fn watch_sources(plugins: &Path, wit: &Path) {
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let mut pending = vec![plugins.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
                .path();
            let name = path.file_name().unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.to_string_lossy().starts_with('.') {
                    pending.push(path);
                }
            } else {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// Fails early, with the command to fix it, when the toolchain has no
/// standard library for the guest target (otherwise the nested build fails
/// much later with "can't find crate for `core`").
fn require_guest_target(rustc: &OsString) {
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", rustc.to_string_lossy()));
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let guest_std = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(GUEST_TARGET)
        .join("lib");
    if !output.status.success() || !guest_std.is_dir() {
        panic!(
            "\n\nThe Rust target `{GUEST_TARGET}` is not installed for this toolchain \
             (no {}).\nThe merchant plugins in plugins/ are built for it. Run:\n\n    \
             rustup target add {GUEST_TARGET}\n\n",
            guest_std.display()
        );
    }
}

/// The outer build's target directory: `CARGO_TARGET_DIR` if set (relative
/// to the repository root when relative), else `<repo>/target`.
fn outer_target_dir(repo: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo.join(dir),
        None => repo.join("target"),
    }
}

fn build_plugins(plugins: &Path, target_dir: &Path, rustc: &OsString) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .args(["--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--workspace")
        // The lock file is committed: the guests build from exactly it.
        .arg("--locked")
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(plugins);
    // The outer build's job count bounds the nested one, which cannot share
    // its jobserver once CARGO_MAKEFLAGS is removed.
    if let Ok(jobs) = env::var("NUM_JOBS") {
        command.args(["--jobs", &jobs]);
    }
    for (name, _) in env::vars_os() {
        let name_str = name.to_string_lossy();
        let removed = REMOVED_VARS.contains(&name_str.as_ref())
            || name_str.starts_with("DEP_")
            || (name_str.starts_with("CARGO_") && !keeps_cargo_var(&name_str));
        if removed {
            command.env_remove(&name);
        }
    }
    // The same compiler as the outer build, without its wrappers.
    command.env("RUSTC", rustc);

    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", cargo.to_string_lossy()));
    if !status.success() {
        panic!(
            "building the merchant plugins failed ({status}); the errors are above. \
             To reproduce: cargo build --release --target {GUEST_TARGET} \
             --manifest-path plugins/Cargo.toml --workspace"
        );
    }
}

/// `CARGO_*` variables that describe the user's cargo set-up rather than
/// this build (where crates come from, how to reach the network, how to
/// print), and so should reach the nested cargo.
fn keeps_cargo_var(name: &str) -> bool {
    name == "CARGO_HOME"
        || name == "CARGO_TERM_COLOR"
        || [
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTRY_",
            "CARGO_REGISTRIES_",
            "CARGO_SOURCE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}
