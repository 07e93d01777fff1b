#!/usr/bin/env bash
# Prometheus, promtool and the Pushgateway for the metrics tests (a real server scraping the processes' endpoints and
# the Pushgateway the retrain pushes to, the dashboard's queries answered by it): Debian's own packages, the versions
# the tests were written against (Prometheus 2.42, Pushgateway 1.5). Idempotent: a second run only checks the
# binaries. The package's service is not started (no init system here; the tests start
# their own server on a free loopback port).
#   install_prometheus.sh
set -euo pipefail
# one install at a time (two pytest workers may both need it): the second waits, then finds the binaries
exec 9>"${TMPDIR:-/tmp}/jobrec-install-prometheus.lock"
flock 9
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null; then
  exit 0
fi
echo "installing Debian's prometheus and prometheus-pushgateway packages ..."
export DEBIAN_FRONTEND=noninteractive
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
pkgs="prometheus prometheus-pushgateway"
# and wait for dpkg's lock rather than fail on it (another apt run on the machine)
apt="$sudo apt-get -o DPkg::Lock::Timeout=600"
$apt install -y -q $pkgs >/dev/null || { $apt update -q >/dev/null && $apt install -y -q $pkgs >/dev/null; }
prometheus --version 2>&1 | head -1
