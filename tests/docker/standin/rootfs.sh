#!/usr/bin/env bash
# A minimal Debian root file system from debootstrap, as a tar stream on stdout (build.sh
# imports it as the stand-ins' base image).
#   tests/docker/standin/rootfs.sh SUITE MIRROR | docker import - NAME:TAG
set -euo pipefail

suite=$1 mirror=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
fi
# The suite's updates and security fixes, as the official Debian images have them.
cat >"$work/rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
tar -C "$work/rootfs" -c .
