#!/usr/bin/env bash
# PostgreSQL server binaries for the multi-worker RDB study test: tests/test_study.py starts
# and stops its own throwaway cluster from them (initdb + pg_ctl on a free loopback port).
# Installs Debian's postgresql package only when no server is installed yet.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || command -v initdb > /dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql > /dev/null
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null
