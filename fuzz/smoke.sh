#!/usr/bin/env bash
# Builds the fuzz crate with cargo-fuzz and runs every target for a short
# while from its seeds; fails if any target crashes (a panic, a broken
# invariant, an ASan report, a timeout or running out of memory).
#
# cargo-fuzz comes from crates.io and builds with nightly-only flags (the
# sanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
#
# Usage: fuzz/smoke.sh [seconds per target]   (default 15, or $FUZZ_SECONDS)
# A crash's input is kept in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
# (from fuzz/).
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-${FUZZ_SECONDS:-15}}"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
cargo fuzz build
echo "fuzz/smoke.sh: built every target in $(($(date +%s) - start)) s"

# New inputs go to a scratch corpus; the committed seeds are only read.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hellos=../pipeline/src/tls/testdata # the captured ClientHellos

failed=()
for target in $(cargo fuzz list); do
    dirs=("$work/$target")
    [ -d "seeds/$target" ] && dirs+=("seeds/$target")
    case "$target" in
        client_hello | control_request) dirs+=("$hellos") ;;
        frame) dirs+=(seeds/tcp_segment) ;;
    esac
    mkdir -p "$work/$target"
    echo "== $target: ${secs} s from ${dirs[*]:1}"
    if ! cargo fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        2> >(grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)[[:space:]]' >&2); then
        failed+=("$target")
    fi
done

echo "fuzz/smoke.sh: $(($(date +%s) - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz/smoke.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/smoke.sh: every target ran ${secs} s without a crash"
