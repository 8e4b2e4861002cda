#!/usr/bin/env bash
# Installs what the local broker needs (a JRE and Maven) with the system package manager.
set -euo pipefail
if command -v java >/dev/null && command -v mvn >/dev/null; then exit 0; fi
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q openjdk-17-jre-headless maven
else
  echo "Install Java 17+ and Maven 3.8+ (for example: dnf install java-17-openjdk maven), then re-run." >&2
  exit 1
fi
