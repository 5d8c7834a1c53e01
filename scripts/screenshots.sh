#!/usr/bin/env bash
# Regenerates the dashboard screenshots committed in docs/screenshots (shown in the README):
# the dashboard test takes them of a real daemon with a seeded history, in headless Chromium,
# at 1280 and 390 px wide. (CI takes the same ones into target/screenshots.)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/chromium ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium sqlite3; }
HOURGLASS_SCREENSHOTS="$PWD/docs/screenshots" \
    cargo test --test it dashboard::pages_show_what_the_database_holds_without_console_errors -- --exact --quiet
ls -l docs/screenshots
