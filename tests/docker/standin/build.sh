#!/usr/bin/env bash
# Builds the stand-in base images (tests/docker/standin/README.md) when the real ones cannot be
# pulled, and prints the build arguments that select them, one per line:
#
#   TF_SERVING_IMAGE=imdb-standin/tensorflow-serving:2.21.0-<key>   for docker/Dockerfile
#   PYTHON_IMAGE=imdb-standin/python:3.11-slim-bookworm-<key>       for smoke and sync Dockerfiles
#
# If the pinned tensorflow/serving image is present or can be pulled, the stand-ins are never
# used: it prints the real names instead. Each stand-in is tagged by a key over everything it is
# built from, so a rerun with nothing changed reuses it, and older stand-ins of the same name are
# removed. Needs a Docker engine, and debootstrap (as root) for the Debian root file system.
#   tests/docker/standin/build.sh [--force-standin]
set -euo pipefail

cd "$(dirname "$0")/../../.."
HERE=tests/docker/standin
# The Dockerfiles use BuildKit (cache and secret mounts); Docker 20.10's CLI needs this to use it.
export DOCKER_BUILDKIT=1
# The real base images, as the shipped Dockerfiles pin them (their one owner).
TF_SERVING_IMAGE=$(sed -n 's/^ARG TF_SERVING_IMAGE=//p' docker/Dockerfile)
PYTHON_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' docker/smoke.Dockerfile)
SUITE=bookworm
MIRROR=http://deb.debian.org/debian

force_standin=false
[[ ${1:-} == --force-standin ]] && force_standin=true

log() { echo "standin: $*" >&2; }

available() { scripts/docker_serving.sh "$1" >/dev/null 2>&1; }  # here, or can be pulled

# A short key over files and strings: what a stand-in is built from.
key_of() {
  { for item in "$@"; do
      if [[ -d $item ]]; then
        find "$item" -type f -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort |
          xargs sha256sum
      elif [[ -f $item ]]; then sha256sum "$item"
      else echo "$item"; fi
    done; } | sha256sum | cut -c1-12
}

# Removes the other tags of a stand-in repository once its current tag exists.
prune_others() {
  local repository=${1%:*} keep=$1 old
  while read -r old; do
    [[ $old == "$keep" ]] || docker rmi "$old" >/dev/null 2>&1 || true
  done < <(docker image ls "$repository" --format '{{.Repository}}:{{.Tag}}')
}

build_rootfs() {  # Debian from debootstrap (rootfs.sh), imported as an image
  local tag=$1
  command -v debootstrap >/dev/null || { log "debootstrap is missing: run make docker-engine"; exit 1; }
  log "debootstrap --variant=minbase $SUITE (about 30 s)"
  "$HERE/rootfs.sh" "$SUITE" "$MIRROR" | docker import --message "debootstrap $SUITE minbase" - "$tag" >/dev/null
}

# A CA bundle for pip inside builds, where TLS to PyPI passes a proxy with its own CA
# (PIP_CA_BUNDLE, else the bundle the host's own pip is told to trust).
CA_BUNDLE=${PIP_CA_BUNDLE:-${PIP_CERT:-}}

build() {  # tag dockerfile build-args...
  local tag=$1 dockerfile=$2
  shift 2
  log "building $tag"
  local secret=()
  [[ -n $CA_BUNDLE && -s $CA_BUNDLE ]] && secret=(--secret "id=pip_ca,src=$CA_BUNDLE")
  docker build --quiet -f "$dockerfile" "${secret[@]}" "$@" -t "$tag" . >/dev/null
}

ensure() {  # tag, then how to build it
  local tag=$1
  shift
  if ! docker image inspect "$tag" >/dev/null 2>&1; then
    "$@"
    prune_others "$tag"
  fi
}

# Each real image is used when it can be had; a stand-in only where it cannot.
if ! $force_standin && available "$PYTHON_IMAGE"; then
  python=$PYTHON_IMAGE
else
  log "$PYTHON_IMAGE cannot be pulled: using a stand-in built here"
  rootfs=imdb-standin/debian:$SUITE-$(key_of "$SUITE" "$MIRROR" "$HERE/rootfs.sh")
  ensure "$rootfs" build_rootfs "$rootfs"
  python=imdb-standin/python:${PYTHON_IMAGE#python:}-$(key_of "$rootfs" "$HERE/python.Dockerfile")
  ensure "$python" build "$python" "$HERE/python.Dockerfile" --build-arg "ROOTFS_IMAGE=$rootfs"
fi

if ! $force_standin && available "$TF_SERVING_IMAGE"; then
  serving=$TF_SERVING_IMAGE
else
  log "$TF_SERVING_IMAGE cannot be pulled: using a stand-in built here (on $python)"
  serving=imdb-standin/tensorflow-serving:${TF_SERVING_IMAGE#*:}-$(key_of "$python" \
    "$HERE/tensorflow-serving.Dockerfile" "$HERE/tf_serving_entrypoint.sh" \
    "$HERE/tensorflow_model_server.py" requirements.lock serving)
  ensure "$serving" build "$serving" "$HERE/tensorflow-serving.Dockerfile" \
    --build-arg "PYTHON_IMAGE=$python"
fi

echo "TF_SERVING_IMAGE=$serving"
echo "PYTHON_IMAGE=$python"
