#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v procps >/dev/null 2>&1 || command -v ps >/dev/null || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Python servers for the email/HTTP tests (aiosmtpd: a real SMTP server with STARTTLS + AUTH).
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check 'aiosmtpd==1.4.6'

cargo build --locked --bins
cargo test --locked --all-targets -- --test-threads="${HOURGLASS_TEST_THREADS:-8}"
