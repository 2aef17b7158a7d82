#!/usr/bin/env bash
# Installs the real TLS peers and servers the tests drive, when they are missing:
# openssl (CA, `openssl ocsp` responder, s_client), curl (--cert-status), gnutls-cli, and the
# servers the sidecar and host mode feed staples to: nginx, haproxy.
# Debian/Ubuntu only; uses apt-get (as root, or through sudo when there is one).
set -euo pipefail

declare -A package_of=(
  [openssl]=openssl
  [curl]=curl
  [gnutls-cli]=gnutls-bin
  [nginx]=nginx
  [haproxy]=haproxy
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo ">> installing system tools: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Keep package scripts from starting services (nginx on port 80): tests start their own.
guard=/usr/sbin/policy-rc.d
if [ ! -e "$guard" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$guard" >/dev/null
  $sudo chmod +x "$guard"
  trap '$sudo rm -f "$guard"' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
