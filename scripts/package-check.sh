#!/usr/bin/env bash
# The Debian package's round trip, as CI runs it (as root): build it, lintian (no error),
# install with dpkg -i, run the installed binary on the installed config, verify the installed
# unit, then purge it and check nothing of it is left.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v lintian >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
deb=$(bash scripts/deb.sh)
echo "package: $deb"
lintian --fail-on error "$deb"
dpkg -i "$deb"
test -d /etc/hourglass/jobs.d
# The group whose members may use the API's socket.
getent group hourglass >/dev/null
dpkg-query -W -f='${Conffiles}\n' hourglass | grep -q '/etc/hourglass/hourglass.toml'
/usr/bin/hourglass --version
/usr/bin/hourglass check --config /etc/hourglass/hourglass.toml
systemd-analyze verify /usr/lib/systemd/system/hourglass.service
test -s /usr/share/bash-completion/completions/hourglass
man -l /usr/share/man/man1/hourglass.1.gz >/dev/null 2>&1 || zcat /usr/share/man/man1/hourglass.1.gz | grep -q '^.TH hourglass'
dpkg --purge hourglass
test ! -e /usr/bin/hourglass
test ! -e /usr/lib/systemd/system/hourglass.service
test ! -e /etc/hourglass/hourglass.toml
! getent group hourglass >/dev/null
echo "package round trip: ok"
