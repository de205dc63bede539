#!/usr/bin/env bash
# A Docker engine for this project's container tests, on a Debian 12 or 13 machine.
#
#   scripts/docker_engine.sh start    install what is missing, start dockerd if none answers
#   scripts/docker_engine.sh stop     stop the dockerd this script started (by its pid)
#   scripts/docker_engine.sh status   say whether an engine answers, and which
#
# start installs Debian's docker.io (the engine, containerd, runc, tini as docker-init), compose
# v2 and buildx (Debian 13's docker-compose and docker-buildx packages: Debian 12 ships only the
# old compose v1, and the trixie packages depend on nothing but libc6 >= 2.34, so on Debian 12
# they are fetched from trixie with a private apt state and installed with dpkg), and the other
# container tools the tests use: debootstrap (stand-in base images, tests/docker/standin/),
# podman and catatonit (the rendered pod spec). It then starts dockerd in the background, its log
# and pid under .docker-engine/, and waits until `docker info` answers. An engine that already
# answers is left alone; so is one this script did not start, on stop.
#
# Where it cannot (not root, not Debian) it says why and exits 0: the Docker tests then skip with
# that reason, except under CI=true, where a skipped Docker group fails the run.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE_DIR=.docker-engine
LOG=$STATE_DIR/dockerd.log
PID_FILE=$STATE_DIR/dockerd.pid
# Seconds to wait for a started dockerd to answer.
START_TIMEOUT=60
# Debian packages each part needs: the engine, then the container tools of the tests.
ENGINE_PACKAGES=(docker.io)
TOOL_PACKAGES=(debootstrap podman catatonit)
# Compose v2 and buildx: Debian 13's packages (installable on Debian 12 too).
PLUGIN_PACKAGES=(docker-compose docker-buildx)
TRIXIE_MIRROR=http://deb.debian.org/debian

log() { echo "docker-engine: $*"; }

engine_answers() { docker info >/dev/null 2>&1; }

# Why this machine cannot get an engine from this script, or nothing when it can.
cannot_install() {
  if [[ $(id -u) != 0 ]]; then
    echo "not root (installing Debian's docker.io and starting dockerd needs root)"
  elif [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null; then
    echo "not a Debian machine (no /etc/debian_version or apt-get)"
  fi
}

debian_major() { cut -d. -f1 /etc/debian_version; }

missing_packages() {
  local package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      echo "$package"
  done
}

apt_install() {
  log "installing Debian's $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Compose v2 and buildx from Debian 13 (trixie), with an apt state of their own so that the
# machine's sources and package lists are untouched.
install_plugins() {
  local missing
  mapfile -t missing < <(missing_packages "${PLUGIN_PACKAGES[@]}")
  ((${#missing[@]})) || return 0
  if [[ $(debian_major) -ge 13 ]] 2>/dev/null; then
    apt_install "${missing[@]}"
    return
  fi
  log "fetching ${missing[*]} from Debian 13 (Debian $(debian_major) ships compose v1 only)"
  local work
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $TRIXIE_MIRROR trixie main" \
    >"$work/sources.list"
  local apt_options=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
  apt-get "${apt_options[@]}" update -qq
  (cd "$work" && apt-get "${apt_options[@]}" download "${missing[@]}" >/dev/null)
  dpkg -i "$work"/*.deb >/dev/null
  rm -rf "$work"
}

start_dockerd() {
  mkdir -p "$STATE_DIR"
  log "starting dockerd (log: $LOG)"
  # Its own session, so that it outlives this script and make.
  setsid dockerd >"$LOG" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local waited=0
  until engine_answers; do
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      log "dockerd exited; its log ends with:" >&2
      tail -n 20 "$LOG" >&2
      rm -f "$PID_FILE"
      exit 1
    fi
    if ((waited >= START_TIMEOUT * 2)); then
      log "dockerd did not answer within ${START_TIMEOUT} s; see $LOG" >&2
      exit 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  log "dockerd answers (pid $(cat "$PID_FILE")); stop it with: make docker-engine-stop"
}

start() {
  local reason
  reason=$(cannot_install)
  if [[ -n $reason ]]; then
    if engine_answers; then
      log "an engine answers; $reason, so compose v2, buildx and the test tools are not installed here"
    else
      log "no Docker engine answers and $reason: the Docker tests will skip (under CI=true they fail)"
    fi
    return 0
  fi
  local missing
  mapfile -t missing < <(missing_packages "${ENGINE_PACKAGES[@]}" "${TOOL_PACKAGES[@]}")
  if ((${#missing[@]})); then
    apt_install "${missing[@]}"
  fi
  install_plugins
  if engine_answers; then
    log "an engine answers ($(docker info --format '{{.ServerVersion}}' 2>/dev/null)); left as it is"
    return 0
  fi
  start_dockerd
}

stop() {
  if [[ ! -f $PID_FILE ]]; then
    log "no dockerd started from here ($PID_FILE missing); nothing to stop"
    return 0
  fi
  local pid
  pid=$(cat "$PID_FILE")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers (10 s each at most) and its containerd before it exits.
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 120)); do
      sleep 0.5
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd (pid $pid) did not stop within 60 s; killing it" >&2
      kill -KILL "$pid"
    fi
  fi
  rm -f "$PID_FILE"
}

status() {
  if engine_answers; then
    log "an engine answers: Docker $(docker info --format '{{.ServerVersion}}'), $(docker compose version 2>/dev/null || echo 'no compose v2')"
  else
    log "no Docker engine answers"
    return 1
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
