#!/usr/bin/env bash
# The house's structure, checked in CI (issue 11): imports flow one way, files stay small,
# every module says what it is.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# Job kinds know neither the config loader, the runner, the daemon nor the alerts.
if grep -rnE 'crate::(config|runner|alert|scheduler|daemon|cli)\b' src/job/; then
    echo "check-structure: src/job/ imports a module above it (above)" >&2
    fail=1
fi
# Alerts know jobs only by name.
if grep -nE 'crate::job\b' src/alert.rs; then
    echo "check-structure: src/alert.rs imports from job (above)" >&2
    fail=1
fi
# No file over 600 lines of code before its tests, in the library, the bench, the harness and
# the tests alike.
while IFS= read -r f; do
    n=$(awk '/^#\[cfg\(test\)\]/{exit} {n++} END{print n+0}' "$f")
    if [ "$n" -gt 600 ]; then
        echo "check-structure: $f has $n lines before its tests (at most 600)" >&2
        fail=1
    fi
    if ! head -1 "$f" | grep -q '^//!'; then
        echo "check-structure: $f does not start with a //! line saying what it is" >&2
        fail=1
    fi
done < <(find src bench harness tests -name '*.rs' -not -path '*/target/*' | sort)
exit "$fail"
