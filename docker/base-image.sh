#!/usr/bin/env bash
# Builds a stand-in for `python:3.11-slim-bookworm` on a machine that cannot reach Docker Hub,
# and tags it with that name so the Dockerfiles stay what a user with registry access writes.
#
#   docker/base-image.sh            # only when the image is missing (a no-op otherwise)
#   BASE_IMAGE=python:3.11-slim-bookworm ARCH=arm64 docker/base-image.sh
#
# debootstrap (minbase) → docker import → Debian's python3.11 with venv and pip. The result differs
# from the official image in where python lives (/usr/bin, not /usr/local/bin); the Dockerfiles
# only call `python3`, which both have. Needs root (debootstrap) and a Debian mirror.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
SUITE=${SUITE:-bookworm}
ARCH=${ARCH:-$(dpkg --print-architecture)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE is present; nothing to do"
  exit 0
fi
if docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "pulled $BASE_IMAGE from its registry"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "base-image.sh: $BASE_IMAGE is missing and cannot be pulled; building it needs root" \
       "(debootstrap). Run: sudo $0" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: apt-get install debootstrap" >&2; exit 1; }

root=$(mktemp -d /tmp/splitedge-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"  # it becomes the image's /: mktemp's 0700 would lock out non-root users
echo "building $BASE_IMAGE ($SUITE, $ARCH) from $MIRROR in $root"
debootstrap --variant=minbase --arch="$ARCH" \
  --include=python3.11,python3.11-venv,python3-pip,ca-certificates \
  "$SUITE" "$root" "$MIRROR"
chroot "$root" ln -sf /usr/bin/python3.11 /usr/local/bin/python3
chroot "$root" ln -sf /usr/bin/python3.11 /usr/local/bin/python
# What python:*-slim also trims: apt lists, docs and man pages, caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | docker import \
  --platform "linux/$ARCH" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$BASE_IMAGE"
docker image ls "$BASE_IMAGE"
