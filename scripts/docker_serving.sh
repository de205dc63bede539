#!/usr/bin/env bash
# Can this machine run an image with Docker? Exits 0 when a Docker engine answers and IMAGE
# (default: docker/Dockerfile's pinned TF_SERVING_IMAGE, or the one in TF_SERVING_IMAGE) is
# present or can be pulled; otherwise prints one line saying why and exits 1. make serve and
# make demo then serve with the local server instead; tests/docker/standin/build.sh then builds
# a stand-in.
#   scripts/docker_serving.sh [IMAGE]
set -uo pipefail

cd "$(dirname "$0")/.."
image=${1:-${TF_SERVING_IMAGE:-$(sed -n 's/^ARG TF_SERVING_IMAGE=//p' docker/Dockerfile)}}
# Seconds a pull may take before the registry counts as unreachable.
PULL_TIMEOUT=300

if ! docker info >/dev/null 2>&1; then
  echo "No Docker engine answers"
  exit 1
fi
docker image inspect "$image" >/dev/null 2>&1 && exit 0
echo "Pulling $image ..." >&2
if ! error=$(timeout "$PULL_TIMEOUT" docker pull --quiet "$image" 2>&1 >/dev/null); then
  echo "A Docker engine answers but cannot pull $image (${error##*: })"
  exit 1
fi
