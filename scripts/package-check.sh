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
installed=$(dpkg -i "$deb" 2>&1) || { echo "$installed" >&2; exit 1; }
echo "$installed"
# Without systemd running (as here in CI), the install says that nothing started.
if [ ! -d /run/systemd/system ]; then
    grep -q "systemd is not running here, so the service was not started" <<<"$installed"
fi
test -d /etc/hourglass/jobs.d
# The group whose members may use the API's socket.
getent group hourglass >/dev/null
dpkg-query -W -f='${Conffiles}\n' hourglass | grep -q '/etc/hourglass/hourglass.toml'
/usr/bin/hourglass --version
/usr/bin/hourglass check --config /etc/hourglass/hourglass.toml
systemd-analyze verify /usr/lib/systemd/system/hourglass.service
test -s /usr/share/bash-completion/completions/hourglass
zcat /usr/share/man/man1/hourglass.1.gz | grep -q '^.TH hourglass'
# Every page the main one names (hourglass-run(1), ...) is installed.
for page in $(zcat /usr/share/man/man1/hourglass.1.gz | sed 's/\\-/-/g' | grep -o 'hourglass-[a-z-]*(1)' | sed 's/(1)//' | sort -u); do
    zcat "/usr/share/man/man1/$page.1.gz" | grep -q "^.TH $page 1"
done
dpkg --purge hourglass
test ! -e /usr/bin/hourglass
test ! -e /usr/lib/systemd/system/hourglass.service
test ! -e /etc/hourglass/hourglass.toml
! getent group hourglass >/dev/null
echo "package round trip: ok"
