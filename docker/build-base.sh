#!/usr/bin/env bash
# Build the base image where no container registry is reachable: a minimal Debian (bookworm)
# with Python 3.11 made by debootstrap from Debian's own packages, imported into Docker.
# On a machine that reaches Docker Hub this is not needed: `make images BASE=python:3.11-slim`.
set -euo pipefail
tag="${1:-dslab-base:bookworm}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag exists"; exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$tag"
echo "built $tag"
