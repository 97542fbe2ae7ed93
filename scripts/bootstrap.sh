# Sourced by the other scripts: makes sure the toolchain that builds xtask (pinned in
# rust-toolchain.toml) is installed — RUSTUP_AUTO_INSTALL=0 means rustup will not do it
# on first use — then hands over to xtask, which installs everything else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APP_TOOLCHAIN="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
if ! command -v rustup >/dev/null 2>&1; then
    echo "error: rustup is required (https://rustup.rs); install it, then rerun $0" >&2
    exit 1
fi
if ! rustup toolchain list | grep -q "^${APP_TOOLCHAIN}-"; then
    echo "==> installing Rust toolchain ${APP_TOOLCHAIN}" >&2
    rustup toolchain install "$APP_TOOLCHAIN" --profile minimal -c rust-src -c llvm-tools >&2
fi
xtask() {
    cargo "+${APP_TOOLCHAIN}" run --manifest-path "$ROOT/Cargo.toml" --package xtask -- "$@"
}
