#!/bin/sh
# Install the system packages the test suite or the benchmarks need (Debian/Ubuntu, as root):
#   nginx-light  the real reverse proxy of tests/http/test_reverse_proxy.py (the default)
#   wrk          the HTTP load of bench/bench_webhooks.py and bench/bench_peers.py
#                (`make bench` and `make bench-peers` ask for it: install-system-deps.sh wrk)
# `make test` runs this only when a binary is missing and the user is root; run it by hand
# otherwise (sudo sh scripts/install-system-deps.sh). Without it those tests skip (and fail
# under CI=true, where a skipped proxy test would hide a security regression).
#
# Debian's nginx package starts a system nginx on port 80 when installed; the tests start
# their own on free loopback ports, so services are kept from starting during the install
# (a policy-rc.d that refuses every start, removed again afterwards).
set -eu
if [ "$(id -u)" != "0" ]; then
    echo "install-system-deps: run as root (apt-get)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install ${*:-nginx-light} with your package manager" >&2
    exit 1
fi
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    ADDED_POLICY=1
fi
cleanup() {
    if [ -n "$ADDED_POLICY" ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT INT TERM
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
PACKAGES="${*:-nginx-light}"
# shellcheck disable=SC2086  # a list of package names
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
echo "install-system-deps: installed $PACKAGES"
