#!/bin/bash
# The serving image's entrypoint (under tini): runs tensorflow_model_server with the container's
# arguments and mends two things the binary does not do inside a container.
#
# 1. Thread pools sized from the container's CPUs. The binary sizes them from the CPU affinity
#    mask and ignores the CFS quota, so a pod limited to 2 CPUs on a 64-core node would run
#    64-thread pools (kubernetes#67577, tensorflow/serving#1618). Here the CPU count is the
#    smaller of the quota (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us; a
#    fraction rounds down, at least 1) and the affinity mask (a cpuset), and it sets
#      --tensorflow_intra_op_parallelism=N --tensorflow_inter_op_parallelism=N
#      --rest_api_num_threads=4N --grpc_max_threads=4N   (4 per CPU: the binary's own rule)
#    and, when batching is on and its parameters file sets no num_batch_threads, a copy of that
#    file under /tmp with num_batch_threads N. A flag given to the container wins over its
#    derived value (the derived one is then left out), and so does a num_batch_threads in the
#    file.
# 2. A drain on SIGTERM. The binary installs no SIGTERM handler (tensorflow/serving#1853): it
#    dies at once and drops the requests in flight. Here SIGTERM (or SIGINT) leaves the server
#    serving for TF_SERVING_DRAIN_SECONDS more, then stops it, and the container exits 143 (130
#    for SIGINT). A second signal ends the drain at once. Kubernetes' preStop sleep and grace
#    period, and compose's stop_grace_period, leave room for it (a test checks the sums).
#
# It logs one line at start (the CPUs it found and the flags it added) and one per signal.
# CGROUP_ROOT (default /sys/fs/cgroup) and TF_SERVING_BINARY (default the binary) exist for the
# tests (tests/unit/test_entrypoint.py).
set -uo pipefail

SERVER=${TF_SERVING_BINARY:-/usr/bin/tensorflow_model_server}
DRAIN_SECONDS=${TF_SERVING_DRAIN_SECONDS:-5}
CGROUP_ROOT=${CGROUP_ROOT:-/sys/fs/cgroup}
TMP_DIR=${TMPDIR:-/tmp}

log() { echo "serving-entrypoint: $*" >&2; }

# CPUs the quota allows (rounded down, at least 1), or nothing when there is no quota.
quota_cpus() {
  local quota period
  if [[ -r $CGROUP_ROOT/cpu.max ]]; then
    read -r quota period <"$CGROUP_ROOT/cpu.max"
  else
    local dir
    for dir in "$CGROUP_ROOT/cpu" "$CGROUP_ROOT/cpu,cpuacct" "$CGROUP_ROOT/cpuacct,cpu"; do
      if [[ -r $dir/cpu.cfs_quota_us && -r $dir/cpu.cfs_period_us ]]; then
        quota=$(<"$dir/cpu.cfs_quota_us") period=$(<"$dir/cpu.cfs_period_us")
        break
      fi
    done
  fi
  [[ ${quota:-max} =~ ^[0-9]+$ && ${period:-0} =~ ^[0-9]+$ ]] && ((quota > 0 && period > 0)) ||
    return 0
  local cpus=$((quota / period))
  echo $((cpus > 0 ? cpus : 1))
}

# CPUs this process may run on (sched_getaffinity, what the binary counts).
affinity_cpus() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

# The value of --NAME in the arguments (the last one wins, as in the binary), or nothing.
arg_value() {
  local name=$1 value="" argument
  shift
  for argument in "$@"; do
    case $argument in
      --"$name"=*) value=${argument#--"$name"=} ;;
      --"$name") value=true ;;
    esac
  done
  echo "$value"
}

given() { [[ -n $(arg_value "$@") ]]; }

args=("$@")
affinity=$(affinity_cpus)
quota=$(quota_cpus)
cpus=$affinity
[[ -n $quota ]] && ((quota < cpus)) && cpus=$quota

derived=()
add() {  # add NAME VALUE: the flag, unless the container's arguments give it
  given "$1" "${args[@]}" || derived+=("--$1=$2")
}
# The binary's session_parallelism sets both pools; with it given, derive neither.
if ! given tensorflow_session_parallelism "${args[@]}"; then
  add tensorflow_intra_op_parallelism "$cpus"
  add tensorflow_inter_op_parallelism "$cpus"
fi
add rest_api_num_threads $((4 * cpus))
add grpc_max_threads $((4 * cpus))

# Batching threads live in the parameters file: a copy with num_batch_threads, if it has none.
batching_file=$(arg_value batching_parameters_file "${args[@]}")
batching=$(arg_value enable_batching "${args[@]}")
batching_note=""
if [[ $batching =~ ^(true|1)$ && -n $batching_file && -r $batching_file ]] &&
  ! grep -Eq '^[[:space:]]*num_batch_threads' "$batching_file"; then
  derived_file=$TMP_DIR/tfserving-batching.config
  if { cat "$batching_file" && printf '\n# Added by serving-entrypoint: one per CPU.\nnum_batch_threads { value: %d }\n' "$cpus"; } \
    >"$derived_file" 2>/dev/null; then
    for i in "${!args[@]}"; do
      [[ ${args[$i]} == --batching_parameters_file=* ]] && args[i]=--batching_parameters_file=$derived_file
    done
    batching_note=", num_batch_threads $cpus ($derived_file)"
  else
    log "cannot write $derived_file: batching keeps the binary's default thread count"
  fi
fi

log "$cpus CPUs (affinity $affinity, quota ${quota:-none}); added ${derived[*]:-nothing}$batching_note; drain on SIGTERM: ${DRAIN_SECONDS} s"

server_pid=""
drain_then_stop() {  # drain_then_stop SIGNAL EXIT_CODE
  local signal=$1 code=$2 sleeper
  log "$signal: serving ${DRAIN_SECONDS} s more for the requests in flight, then stopping"
  sleep "$DRAIN_SECONDS" &
  sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null' TERM INT
  wait "$sleeper"
  kill -TERM "$server_pid" 2>/dev/null
  wait "$server_pid"
  log "server stopped"
  exit "$code"
}
trap 'drain_then_stop SIGTERM 143' TERM
trap 'drain_then_stop SIGINT 130' INT

# Not exec: this shell stays to drain. Without job control a background job ignores SIGINT, so
# a Ctrl-C reaches only this shell.
"$SERVER" "${derived[@]}" "${args[@]}" &
server_pid=$!
wait "$server_pid"
exit $?
