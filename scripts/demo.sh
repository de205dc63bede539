#!/usr/bin/env bash
# `make demo`: train -> export -> serve -> smoke test over REST and gRPC -> predictions -> stop.
# Serving uses docker compose (the real tensorflow/serving) when a Docker engine answers and can
# pull the image (scripts/docker_serving.sh), and the local TF-Serving-compatible server
# otherwise. Environment: PY, DATA, REST_PORT, GRPC_PORT,
# TRAIN_ARGS (the Makefile sets them).
set -euo pipefail

PY=${PY:-.venv/bin/python}
DATA=${DATA:-auto}
read -r MODEL_NAME DEFAULT_GRPC DEFAULT_REST < <("$PY" -c \
  'from serving import contract as c; print(c.MODEL_NAME, c.GRPC_PORT, c.REST_PORT)')
REST_PORT=${REST_PORT:-$DEFAULT_REST}
GRPC_PORT=${GRPC_PORT:-$DEFAULT_GRPC}
# The demo keeps its versions apart from models/imdb (make train's), so that a demo model never
# becomes the latest version that make serve and make docker-build pick up.
MODEL_DIR=${DEMO_MODEL_DIR:-artifacts/demo/models/$MODEL_NAME}
REST_URL="http://127.0.0.1:$REST_PORT"
GRPC_TARGET="127.0.0.1:$GRPC_PORT"
# Seconds to wait for the server to load the model and open its ports.
START_DEADLINE=180

step() { printf '\n==> %s\n' "$*"; }

step "Training on: $DATA"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
"$PY" -m training train --data "$DATA" --model-dir "$MODEL_DIR" ${TRAIN_ARGS:-}
version=$("$PY" -m serving versions "$MODEL_DIR" --latest)

mkdir -p artifacts
if reason=$(scripts/docker_serving.sh); then
  step "Serving version $version with tensorflow/serving (docker compose)"
  export MODEL_VERSION=$version MODEL_DIR REST_PORT GRPC_PORT
  compose=(docker compose -f docker/docker-compose.yml)
  "${compose[@]}" up --detach --build
  trap '"${compose[@]}" down' EXIT
else
  step "$reason: serving $MODEL_DIR with the local TF-Serving-compatible server"
  log=artifacts/demo-server.log
  "$PY" -m serving.model_server --port="$GRPC_PORT" --rest_api_port="$REST_PORT" \
    --model_name="$MODEL_NAME" --model_base_path="$(realpath "$MODEL_DIR")" \
    --bind_address=127.0.0.1 >"$log" 2>&1 &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true' EXIT
  # Ready when the server's own status reports a version AVAILABLE; stop waiting if it dies.
  waited=0
  until "$PY" -m serving status --rest-url "$REST_URL" --model-name "$MODEL_NAME" 2>/dev/null |
      grep -q ": AVAILABLE"; do
    if ! kill -0 "$server_pid" 2>/dev/null || ((waited >= START_DEADLINE)); then
      echo "The local server did not start; its log ($log) ends with:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "Server log: $log"
fi

step "Smoke test"
"$PY" scripts/smoke_test.py --rest-url "$REST_URL" --grpc-target "$GRPC_TARGET" \
  --model-name "$MODEL_NAME" --deadline "$START_DEADLINE"

reviews=(
  "One of the best films I have seen: moving, funny and beautifully acted."
  "A tedious, badly written mess. I want those two hours of my life back."
  "The cast is wonderful, but the plot is predictable and the ending falls flat."
)
step "Predictions over REST ($REST_URL)"
"$PY" -m serving predict --rest-url "$REST_URL" --model-name "$MODEL_NAME" "${reviews[@]}"
step "Predictions over gRPC ($GRPC_TARGET)"
"$PY" -m serving predict --grpc-target "$GRPC_TARGET" --model-name "$MODEL_NAME" "${reviews[@]}"

step "Done: stopping the server"
