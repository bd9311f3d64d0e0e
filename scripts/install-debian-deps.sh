#!/usr/bin/env bash
# Debian packages the network tests and benchmarks need: real DHCP clients, the anchor
# servers (Kea, dnsmasq), perfdhcp, iproute2 for namespaces, and podman, runc and debootstrap
# for the image tests (tests/images: the images built and run without Docker; podman's
# systemd units, if any, are not started here either). Installs only what is
# missing, and only as root; otherwise says what is missing and succeeds, so that
# `make test` still runs everything that does not need them.
set -euo pipefail

packages=(iproute2 isc-dhcp-client udhcpc dhcpcd-base dnsmasq-base kea-dhcp4-server kea-admin dhcping curl procps util-linux faketime
  podman runc debootstrap)
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
# The anchors (Kea, dnsmasq) are started by the tests and the benchmark on demand, never as
# system services: a policy-rc.d that answers 101 ("action forbidden") keeps the packages'
# maintainer scripts from starting them, under systemd (deb-systemd-invoke) and sysvinit
# (invoke-rc.d) alike. So nothing needs stopping afterwards, and no process is killed by
# name: a Kea or dnsmasq already running on this machine is left alone. An existing
# policy-rc.d is the administrator's, and is kept.
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# written by vm-dhcp scripts/install-debian-deps.sh while it installs\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  ours=$policy
  trap 'rm -f "$ours"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Installed now, so not wanted at boot either (only the units of packages installed here).
for p in "${missing[@]}"; do
  case "$p" in
    kea-dhcp4-server) systemctl disable kea-dhcp4-server >/dev/null 2>&1 || true ;;
  esac
done
