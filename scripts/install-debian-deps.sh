#!/usr/bin/env bash
# Debian packages the network tests and benchmarks need: real DHCP clients, the anchor
# servers (Kea, dnsmasq), perfdhcp, and iproute2 for namespaces. Installs only what is
# missing, and only as root; otherwise says what is missing and succeeds, so that
# `make test` still runs everything that does not need them.
set -euo pipefail

packages=(iproute2 isc-dhcp-client udhcpc dhcpcd-base dnsmasq-base kea-dhcp4-server kea-admin dhcping curl procps util-linux faketime)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot install ${missing[*]}; network namespace tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The anchors are started by the benchmark on demand, never as system services.
for unit in kea-dhcp4-server isc-kea-dhcp4-server dnsmasq; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done
pkill -x kea-dhcp4 2>/dev/null || true
