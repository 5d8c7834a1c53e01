#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v procps >/dev/null 2>&1 || command -v ps >/dev/null || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

cargo build --locked --bins
cargo test --locked --all-targets -- --test-threads="${HOURGLASS_TEST_THREADS:-8}"
