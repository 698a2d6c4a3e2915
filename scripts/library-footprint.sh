#!/usr/bin/env bash
# What a library user compiles: a scratch crate that depends on `steadfast` with its default
# features (and tokio), whose main builds a Runtime. Prints the unique crates it compiles and
# the time of a clean `cargo build -j2` (debug) in a fresh target directory.
#
#   scripts/library-footprint.sh          this working tree
#   scripts/library-footprint.sh REV      the library as it was at git revision REV
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'git worktree remove --force "$work/steadfast" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if [ $# -gt 0 ]; then
    git worktree add --detach "$work/steadfast" "$1" >/dev/null
    lib="$work/steadfast"
else
    lib="$(pwd)"
fi
mkdir -p "$work/user/src"
cat >"$work/user/Cargo.toml" <<TOML
[package]
name = "libuser"
version = "0.1.0"
edition = "2024"

[dependencies]
steadfast = { path = "$lib" }
tokio = { version = "1", features = ["rt-multi-thread", "macros"] }

[workspace]
TOML
echo 'fn main() { let _ = steadfast::Runtime::builder(); }' >"$work/user/src/main.rs"
cd "$work/user"
crates="$(cargo tree -e normal --prefix none | sed 's/ (.*//' | sort -u | wc -l)"
heavy="$(cargo tree -e normal --prefix none | sed 's/ (.*//' | sort -u \
    | grep -E '^(clap|axum|hyper|lettre|reqwest|aws-lc-sys|rustls|minijinja) ' | tr '\n' ' ' || true)"
start=$(date +%s.%N)
CARGO_TARGET_DIR="$work/target" cargo build -j2 --quiet
end=$(date +%s.%N)
echo "crates: $crates; heavy among them: ${heavy:-none}; clean build: $(echo "$end - $start" | bc) s"
