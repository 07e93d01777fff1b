#!/usr/bin/env bash
# Prometheus, promtool and the Pushgateway for the metrics tests (a real server scraping the processes' endpoints and
# the Pushgateway the retrain pushes to, the dashboard's queries answered by it): Debian's own packages, the versions
# the tests were written against (Prometheus 2.42, Pushgateway 1.5). Idempotent: a second run only checks the
# binaries. The package's service is not started (no init system here; the tests start
# their own server on a free loopback port).
#   install_prometheus.sh
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null; then
  exit 0
fi
echo "installing Debian's prometheus and prometheus-pushgateway packages ..."
export DEBIAN_FRONTEND=noninteractive
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
pkgs="prometheus prometheus-pushgateway"
$sudo apt-get install -y -q $pkgs >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q $pkgs >/dev/null; }
prometheus --version 2>&1 | head -1
