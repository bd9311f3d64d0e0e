#!/usr/bin/env bash
# Builds, with podman, a stand-in for the Dockerfiles' PYTHON_IMAGE (python:3.11.13-slim-bookworm)
# from Debian packages alone, for machines that reach no container registry: a
# `debootstrap --variant=minbase bookworm` root with Debian's python3, python3-venv, python3-pip
# and python-is-python3, imported with `podman import`. Prints the image's name on stdout.
#
# What it adds to the real slim image: this machine's CA bundle, with PIP_CERT and SSL_CERT_FILE
# pointing at it, so that pip in a build trusts a TLS-intercepting proxy (nothing of it is
# needed where the index is reached directly). The name carries a hash of this script and of
# the CA bundle: the image is built once and kept, until either changes.
#
#   scripts/podman-base.sh            build it when missing, print its name
#   MIRROR=http://deb.debian.org/debian SUITE=bookworm  (defaults)
set -euo pipefail

MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
PODMAN=${PODMAN:-podman}

[ "$(id -u)" = 0 ] || { echo "podman-base.sh: debootstrap needs root" >&2; exit 1; }
for tool in "$PODMAN" debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "podman-base.sh: $tool is missing (scripts/install-debian-deps.sh installs it)" >&2
    exit 1
  }
done
[ -r "$CA_BUNDLE" ] || { echo "podman-base.sh: no CA bundle at $CA_BUNDLE" >&2; exit 1; }

hash=$(cat "$0" "$CA_BUNDLE" <(echo "$MIRROR $SUITE $PACKAGES") | sha256sum | cut -c1-12)
image="localhost/vm-dhcp-python-standin:${SUITE}-${hash}"
# earlier stand-ins go, once no image built on them holds them any more
forget_older() {
  for old in $("$PODMAN" images --format '{{.Repository}}:{{.Tag}}' "${image%:*}"); do
    [ "$old" = "$image" ] || "$PODMAN" rmi "$old" >/dev/null 2>&1 || true
  done
}
if "$PODMAN" image exists "$image"; then
  forget_older
  echo "$image"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vm-dhcp-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
echo "podman-base.sh: debootstrap $SUITE from $MIRROR (about a minute, once)" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/root" "$MIRROR" \
  >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
root=$work/root
# what Debian's official slim images do (debuerreotype): apt keeps no package caches, dpkg
# installs no documentation, manual pages or translations (in this root, and in every image
# built on it)
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
DPKG
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/usr/share/groff/* "$root"/usr/share/lintian/*
mkdir -p "$root/etc/ssl/certs"
cp "$CA_BUNDLE" "$root/etc/ssl/certs/vm-dhcp-build-ca.crt"
cert=/etc/ssl/certs/vm-dhcp-build-ca.crt
tar -C "$root" --numeric-owner -c . | "$PODMAN" import --quiet \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV LANG=C.UTF-8" \
  --change "ENV PIP_CERT=$cert" \
  --change "ENV SSL_CERT_FILE=$cert" \
  --change 'CMD ["python3"]' \
  --message "vm-dhcp stand-in for python:3.11-slim-bookworm (scripts/podman-base.sh)" \
  - "$image" >/dev/null
echo "podman-base.sh: built $image in $(( $(date +%s) - started )) s" >&2
forget_older
echo "$image"
