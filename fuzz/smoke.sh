#!/usr/bin/env bash
# CI smoke run of the fuzz targets: each for a few seconds on its committed
# corpus, so that a target that no longer builds, or an input that crashes
# again, fails CI. Real fuzzing runs for minutes to hours; see RELIABILITY.md
# (## Fuzzing) for the commands.
#
# Only the three targets that do not need wasmtime run here
# (`--no-default-features`): an instrumented release build of wasmtime for
# `component_upload` takes longer than CI should spend on a smoke run.
#
# cargo fuzz needs a nightly toolchain; without one this says so and skips.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SMOKE_SECONDS:-20}"
targets=(decode amount quote_settle)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz smoke: skipped, no nightly toolchain installed (cargo fuzz needs one)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

# No sanitizer: the code under test is safe Rust, so panics, assertions and
# overflow checks (on in cargo fuzz builds) are what finds bugs; ASan would
# double the build and halve the executions.
flags=(--sanitizer none --no-default-features)
# One build for all three (component_upload needs the `upload` feature).
cargo +nightly fuzz build "${flags[@]}"

# Runs on a copy of each corpus: inputs found in CI are not worth a commit.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    # Inputs that once showed a bug must pass, and stay passing.
    if [ -d "artifacts-found/$target" ]; then
        echo "fuzz smoke: $target on artifacts-found/$target"
        cargo +nightly fuzz run "${flags[@]}" "$target" "artifacts-found/$target"/*
    fi
    echo "fuzz smoke: $target for ${seconds}s"
    cp -r "corpus/$target" "$work/$target"
    cargo +nightly fuzz run "${flags[@]}" "$target" "$work/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
