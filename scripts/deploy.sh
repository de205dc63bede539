#!/usr/bin/env bash
# Deploy the serving image to Kubernetes (GKE or EKS), roll back, or smoke-test what runs.
#
#   scripts/deploy.sh deploy   --cloud CLOUD --image REGISTRY/REPOSITORY/imdb-sentiment-serving \
#                              [--model-version N] [--dry-run]
#   scripts/deploy.sh rollback --cloud CLOUD [--to-revision N] [--dry-run]
#   scripts/deploy.sh smoke    [--dry-run]
#
# deploy: build the image with model version N baked in (default: the highest under
# models/imdb), push it, apply k8s/overlays/<cloud> with the image pinned by digest, wait for the
# rollout (rolled back automatically if it fails), then smoke-test through a port-forward.
# CLOUD is an overlay: gke or eks (the model baked into the image), gke-repository or
# eks-repository (versions from a bucket, docs/deploy.md; eks-repository also builds and pushes
# the sync sidecar's image, docker/sync.Dockerfile, next to the serving image).
# rollback: `kubectl rollout undo`, wait, smoke-test. --dry-run prints every command instead of
# running it and renders the manifests it would apply (no cluster, registry or Docker needed).
# The current kubectl context decides the cluster (docs/deploy.md).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
KUBECTL=${KUBECTL:-kubectl}
# Model name, ports, base dir and namespace come from serving/contract.py, their one owner.
read -r MODEL_NAME GRPC_PORT REST_PORT MODEL_DIR NAMESPACE < <("$PY" -c \
  'from serving import contract as c
print(c.MODEL_NAME, c.GRPC_PORT, c.REST_PORT, c.MODEL_BASE_DIR, c.K8S_NAMESPACE)')
# Kubernetes names, owned by k8s/base (a test checks them against the rendered manifests).
DEPLOYMENT=imdb-sentiment
SERVICE=imdb-sentiment
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-10m}
# The Dockerfiles use BuildKit (cache and secret mounts); Docker 20.10's CLI needs this to use it.
export DOCKER_BUILDKIT=1
# Local ports of the smoke test's port-forward (away from a local server on 8500/8501).
FORWARD_REST_PORT=${FORWARD_REST_PORT:-18501}
FORWARD_GRPC_PORT=${FORWARD_GRPC_PORT:-18500}

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "deploy: $*" >&2; exit 2; }

command=${1:-}
[[ -n $command ]] || usage
shift
cloud="" image="" model_version="" to_revision="" dry_run=false
while (($#)); do
  case $1 in
    --cloud) cloud=${2:-}; shift 2 ;;
    --image) image=${2:-}; shift 2 ;;
    --model-version) model_version=${2:-}; shift 2 ;;
    --to-revision) to_revision=${2:-}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1" ;;
  esac
done

# Runs a command, or prints it under --dry-run.
run() {
  if $dry_run; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

need_cloud() {
  case $cloud in
    gke|eks|gke-repository|eks-repository) ;;
    "") die "--cloud gke|eks|gke-repository|eks-repository is required" ;;
    *) die "--cloud must be gke, eks, gke-repository or eks-repository, got '$cloud'" ;;
  esac
}

smoke() {
  echo "==> Smoke test through kubectl port-forward to service/$SERVICE"
  if $dry_run; then
    run "$KUBECTL" -n "$NAMESPACE" port-forward "service/$SERVICE" \
      "$FORWARD_REST_PORT:$REST_PORT" "$FORWARD_GRPC_PORT:$GRPC_PORT"
    run "$PY" scripts/smoke_test.py --rest-url "http://127.0.0.1:$FORWARD_REST_PORT" \
      --grpc-target "127.0.0.1:$FORWARD_GRPC_PORT" --model-name "$MODEL_NAME" --deadline 120
    return
  fi
  "$KUBECTL" -n "$NAMESPACE" port-forward "service/$SERVICE" \
    "$FORWARD_REST_PORT:$REST_PORT" "$FORWARD_GRPC_PORT:$GRPC_PORT" >/dev/null &
  local forward_pid=$!
  # shellcheck disable=SC2064  # expand now: the pid is known
  trap "kill $forward_pid 2>/dev/null || true" RETURN
  "$PY" scripts/smoke_test.py --rest-url "http://127.0.0.1:$FORWARD_REST_PORT" \
    --grpc-target "127.0.0.1:$FORWARD_GRPC_PORT" --model-name "$MODEL_NAME" --deadline 120
}

# The registry digest of a pushed image (a placeholder under --dry-run).
pushed_digest() {
  if $dry_run; then
    echo "sha256:DIGEST-OF-THE-PUSHED-IMAGE"
  else
    local digest
    digest=$(docker inspect --format '{{index .RepoDigests 0}}' "$1")
    echo "${digest#*@}"
  fi
}

wait_for_rollout() {
  echo "==> Waiting for the rollout (timeout $ROLLOUT_TIMEOUT)"
  if ! run "$KUBECTL" -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" \
      --timeout="$ROLLOUT_TIMEOUT"; then
    echo "deploy: the rollout did not complete; rolling back to the previous revision" >&2
    run "$KUBECTL" -n "$NAMESPACE" rollout undo "deployment/$DEPLOYMENT"
    run "$KUBECTL" -n "$NAMESPACE" rollout status "deployment/$DEPLOYMENT" \
      --timeout="$ROLLOUT_TIMEOUT"
    exit 1
  fi
}

deploy() {
  need_cloud
  [[ -n $image ]] || die "--image REGISTRY/REPOSITORY/imdb-sentiment-serving is required"
  # A tag lives in the last path component (a registry host may carry a port: host:5000/repo).
  [[ ${image##*/} != *:* && $image != *@* ]] || die "--image takes a repository without a tag"
  [[ $image == */* ]] || die "--image needs a registry (e.g. europe-west1-docker.pkg.dev/P/R/...)"
  if [[ -z $model_version ]]; then
    model_version=$("$PY" -m serving versions "$MODEL_DIR" --latest 2>/dev/null || true)
    [[ -n $model_version ]] || die "no model under $MODEL_DIR: run make train first"
  fi
  [[ $model_version =~ ^[0-9]+$ ]] || die "--model-version must be a number"
  $dry_run || [[ -d $MODEL_DIR/$model_version ]] || die "$MODEL_DIR/$model_version does not exist"
  local revision tag reference digest
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  tag="v${model_version}-${revision:0:12}"
  reference="$image:$tag"

  echo "==> Building $reference (model version $model_version)"
  run docker build -f docker/Dockerfile --build-arg "MODEL_VERSION=$model_version" \
    --build-arg "GIT_REVISION=$revision" -t "$reference" .
  echo "==> Pushing $reference"
  run docker push "$reference"
  digest=$(pushed_digest "$reference")
  # eks-repository: the sync sidecar's image, in the same registry, pinned the same way.
  local sync_patch=""
  if [[ $cloud == eks-repository ]]; then
    local sync_reference="${image%/*}/imdb-model-sync:$tag"
    echo "==> Building and pushing $sync_reference"
    # PIP_CA_BUNDLE: a CA bundle for pip behind a TLS-intercepting proxy (a build secret).
    local secret=()
    [[ -n ${PIP_CA_BUNDLE:-} ]] && secret=(--secret "id=pip_ca,src=$PIP_CA_BUNDLE")
    run docker build -f docker/sync.Dockerfile -t "$sync_reference" "${secret[@]}" .
    run docker push "$sync_reference"
    sync_patch="
      - op: replace
        path: /spec/template/spec/initContainers/0/image
        value: ${image%/*}/imdb-model-sync@$(pushed_digest "$sync_reference")"
  fi

  # A kustomization on top of the overlay that pins the image by digest and records the model
  # version: the committed overlays stay untouched. It stays under artifacts/deploy/ with the
  # rendered manifests, as the record of what was applied.
  local workdir overlay
  workdir="${DEPLOY_RECORD_DIR:-artifacts/deploy}/$(date -u +%Y%m%dT%H%M%SZ)-$cloud-model-$model_version"
  mkdir -p "$workdir"
  # kustomize takes resource paths relative to the kustomization.
  overlay=$(realpath --relative-to="$workdir" "k8s/overlays/$cloud")
  cat >"$workdir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $overlay
patches:
  - target:
      kind: Deployment
      name: $DEPLOYMENT
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/image
        value: $image@$digest$sync_patch
      - op: add
        path: /spec/template/metadata/annotations
        value:
          imdb-sentiment/model-version: "$model_version"
          imdb-sentiment/git-revision: "$revision"
      - op: add
        path: /metadata/annotations
        value:
          kubernetes.io/change-cause: "model $model_version, image $reference"
EOF
  echo "==> Applying k8s/overlays/$cloud with $image@$digest"
  "$KUBECTL" kustomize "$workdir" >"$workdir/rendered.yaml"
  echo "Manifests: $workdir/rendered.yaml"
  run "$KUBECTL" apply -f "$workdir/rendered.yaml"
  wait_for_rollout
  smoke
  if [[ $cloud == *-repository ]]; then
    echo "==> Deployed $reference; the pods serve the versions k8s/overlays/$cloud/models.config names"
  else
    echo "==> Deployed model version $model_version ($reference)"
  fi
}

rollback() {
  need_cloud
  echo "==> Rolling back deployment/$DEPLOYMENT"
  local undo=("$KUBECTL" -n "$NAMESPACE" rollout undo "deployment/$DEPLOYMENT")
  [[ -z $to_revision ]] || undo+=("--to-revision=$to_revision")
  run "${undo[@]}"
  wait_for_rollout
  smoke
  run "$KUBECTL" -n "$NAMESPACE" rollout history "deployment/$DEPLOYMENT"
}

case $command in
  deploy) deploy ;;
  rollback) rollback ;;
  smoke) smoke ;;
  -h|--help|help) usage ;;
  *) die "unknown command '$command' (deploy, rollback, smoke)" ;;
esac
