#!/usr/bin/env bash
# Prometheus and promtool for the metrics tests (a real server scraping the processes' endpoints, the dashboard's
# queries answered by it): Debian's own package, the version the tests were written against (2.42). Idempotent: a
# second run only checks the binaries. The package's service is not started (no init system here; the tests start
# their own server on a free loopback port).
#   install_prometheus.sh
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi
echo "installing Debian's prometheus package (prometheus, promtool) ..."
export DEBIAN_FRONTEND=noninteractive
sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
$sudo apt-get install -y -q prometheus >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q prometheus >/dev/null; }
prometheus --version 2>&1 | head -1
