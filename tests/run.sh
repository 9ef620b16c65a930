#!/usr/bin/env bash
# The test command of the README (and of CI): installs what the tests need
# from the distribution's package registry, then runs every test.
#
# Needs root: the lab tests create network namespaces, veths and TUN devices.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: run as root (the lab tests create network namespaces)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own services (nginx on port 80) from starting: the tests
# start their own instances inside their namespaces.
policy_rc=/usr/sbin/policy-rc.d
created_policy_rc=0
if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy_rc"
    chmod 755 "$policy_rc"
    created_policy_rc=1
fi
cleanup() { if [ "$created_policy_rc" = 1 ]; then rm -f "$policy_rc"; fi; }
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends \
    nginx curl openssl ca-certificates iproute2 ethtool iperf3 sslsplit socat procps \
    python3 python3-jsonschema prometheus rsyslog redis-server tshark systemd \
    chromium chromium-driver libvectorscan-dev pkg-config

# schemathesis (PyPI) fuzzes the console API from its OpenAPI document.
python3 -m pip install --quiet schemathesis

cargo fmt --all -- --check
# Also compiles the benchmarks, so they cannot rot. Both IPS prefilters:
# the default build (aho-corasick) and the Vectorscan one the tests run.
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features tlsinspect/vectorscan -- -D warnings
# Two cores: keep the test harness at two threads; lab tests size themselves.
cargo test --workspace --features tlsinspect/vectorscan -- --test-threads=2
# Every fuzz target for a short while, from the committed seeds (cargo-fuzz).
bash fuzz/smoke.sh
