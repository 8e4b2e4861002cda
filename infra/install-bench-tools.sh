#!/usr/bin/env bash
# Puts nginx and wrk (bench/serve.py's baseline server and load generator) at .tools/bin, taken from
# Debian's packages without installing them (nginx's package starts a service).
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/debs.sh
ROOT=.tools/root
if .tools/bin/nginx -v >/dev/null 2>&1 && .tools/bin/wrk --version >/dev/null 2>&1; then exit 0; fi
if ! has_debs; then
  echo "bench/serve.py needs nginx and wrk: install them (e.g. your package manager's nginx and wrk)" >&2
  echo "and link them at .tools/bin/nginx and .tools/bin/wrk, then re-run." >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch_debs "$work" nginx wrk libluajit-5.1-2 libluajit-5.1-common
mkdir -p "$ROOT" .tools/bin
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
lib="$PWD/$ROOT/usr/lib/x86_64-linux-gnu"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PWD/$ROOT/usr/sbin/nginx" > .tools/bin/nginx
printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' "$lib" "$PWD/$ROOT/usr/bin/wrk" > .tools/bin/wrk
chmod 755 .tools/bin/nginx .tools/bin/wrk
.tools/bin/nginx -v
.tools/bin/wrk --version | head -1 || true
