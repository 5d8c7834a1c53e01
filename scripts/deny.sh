#!/usr/bin/env bash
# cargo-deny's checks (deny.toml), in CI: the licences of every dependency, the RustSec
# advisories, duplicate versions (listed as warnings), and where crates come from.
#
# The advisory database is a git checkout in target/advisory-dbs (deny.toml's db-path), read
# offline: cloned from GitHub, or, where GitHub cannot be reached (this project's CI machine
# reaches crates.io but not GitHub), from HOURGLASS_ADVISORY_DB or the machine's mirror of it.
# With no database at all the advisories are not checked, and the log says so loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install -q --locked cargo-deny --version 0.20.2
# cargo-deny's own folder name for the default database (a hash of its URL).
db=target/advisory-dbs/advisory-db-3157b0e258782691
if [ ! -d "$db/.git" ]; then
    mkdir -p "$(dirname "$db")"
    for from in https://github.com/rustsec/advisory-db "${HOURGLASS_ADVISORY_DB:-}" \
        /work/.mirror/rustsec+advisory-db/repo; do
        [ -n "$from" ] || continue
        if timeout 120 git clone -q "$from" "$db" 2>/dev/null; then
            echo "deny.sh: advisory database from $from ($(git -C "$db" log -1 --format=%cs))"
            break
        fi
        rm -rf "$db"
    done
fi
checks=(bans licenses sources)
if [ -d "$db/.git" ]; then
    checks+=(advisories)
else
    echo "deny.sh: WARNING: no RustSec advisory database could be fetched: advisories NOT checked" >&2
fi
# Every crate the lock file names, for every platform (cargo-deny reads them all; a build
# fetches only this platform's, so a fresh machine lacks the rest): from crates.io.
cargo fetch --locked -q
cargo deny --offline check --hide-inclusion-graph --show-stats "${checks[@]}"
