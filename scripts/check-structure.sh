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
# The architecture map in src/lib.rs lists the modules top to bottom (one bullet per level):
# a module uses only those on its bullet or below, as the map says.
if ! python3 - <<'PY'
import glob, os, re, sys
lib=open('src/lib.rs').read()
levels=[]
bullet=None
for line in lib.split('\n'):
    if line.startswith('//! - '):
        bullet=[line]; levels.append(bullet)
    elif line.startswith('//!   ') and bullet is not None:
        bullet.append(line)
    else:
        bullet=None
levels=[re.findall(r'\[`(\w+)`\]', ' '.join(b)) for b in levels]
level={}
for i,names in enumerate(levels):
    for n in names: level[n]=i
mods=re.findall(r'^pub mod (\w+);', lib, re.M)
bad=0
for m in mods:
    if m not in level:
        print(f"check-structure: src/lib.rs's map does not name module {m}"); bad=1; continue
    files=[f'src/{m}.rs'] if os.path.exists(f'src/{m}.rs') else glob.glob(f'src/{m}/**/*.rs', recursive=True)
    for f in files:
        text='\n'.join(l for l in open(f).read().split('\n') if not l.lstrip().startswith('//'))
        for u in sorted(set(re.findall(r'crate::(\w+)', text))):
            if u==m or u not in level: continue
            if level[u] < level[m]:
                print(f"check-structure: {f} uses crate::{u}, which src/lib.rs's map puts above {m}"); bad=1
sys.exit(bad)
PY
then
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
