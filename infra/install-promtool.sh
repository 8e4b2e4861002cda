#!/usr/bin/env bash
# Puts promtool (checks and unit-tests infra/prometheus/alerts.yml) at .tools/bin/promtool, taken from
# Debian's prometheus package without installing that package (it ships a service).
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/debs.sh
TOOL=.tools/bin/promtool
if command -v promtool >/dev/null || "$TOOL" --version >/dev/null 2>&1; then exit 0; fi
if ! has_debs; then
  echo "promtool is missing: install Prometheus's promtool (https://prometheus.io/download/, in the" >&2
  echo "prometheus tarball) on PATH or at $TOOL, then re-run." >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch_debs "$work" prometheus
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
mkdir -p "$(dirname "$TOOL")"
install -m 755 "$work/root/usr/bin/promtool" "$TOOL"
"$TOOL" --version
