#!/usr/bin/env bash
# Install the Debian packages the local stack and tests use (Mosquitto, PostgreSQL 15, docker-compose v1
# for `config` validation, openssl for TLS tests, chromium to open incident reports) when missing.
# As root it installs them; otherwise it prints the exact command and fails.
set -euo pipefail
missing=()
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ -x /usr/bin/mosquitto_passwd ] || missing+=(mosquitto)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)  # validates docker-compose.yml without an engine
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # headless: opens `ioc report` pages in tests
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
else
  echo "missing Debian packages: $pkgs" >&2
  echo "run: sudo apt-get install -y $pkgs" >&2
  exit 1
fi
