#!/usr/bin/env bash
# The whole test gate, as CI runs it (.ci/run calls this script).
# Works on a fresh Debian machine as root: it installs what it needs.
#
#   formatting  -> cargo fmt --check
#   lints       -> cargo clippy --workspace --all-targets -D warnings
#   Rust tests  -> cargo test --workspace (codec, core scenarios, server, e2e)
#   fuzz target -> built (not run) so it cannot rot
#   interop     -> interop/run.sh: real client libraries against a real broker
#   web UI      -> tests/web-ui/run.sh: the management UI in headless Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "toolchain"
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: this gate needs a Rust toolchain >= 1.85 (edition 2024) on PATH" >&2
    exit 1
fi
cargo --version
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
if ! command -v cc >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq build-essential
fi

# Two cores: one build at a time, all of it.
export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "fuzz target builds"
cargo build --locked --manifest-path fuzz/Cargo.toml --target-dir target/fuzz

step "interop suite"
bash interop/run.sh

step "web UI in a browser"
bash tests/web-ui/run.sh

step "gate passed"
