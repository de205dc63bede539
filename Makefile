# The verbs a user types. `make help` lists them.
# Names and ports come from serving/contract.py, the one owner of every name that crosses a
# boundary (plain python3 can read it: the module has no dependencies).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < requirements.lock | cut -d' ' -f1)
# Offline validators for docker/ and k8s/ (checkov, hadolint, yamllint, kubernetes-validate,
# kubectl with kustomize) in their own environment: checkov's pins must not meet TensorFlow's.
TOOLS ?= .tools
TOOLS_STAMP := $(TOOLS)/.installed-$(shell cksum < requirements-tools.lock | cut -d' ' -f1)

CONTRACT := $(shell $(PYTHON_BOOTSTRAP) -c "import sys; sys.path.insert(0, '.'); \
	from serving import contract as c; \
	print(c.MODEL_NAME, c.GRPC_PORT, c.REST_PORT, c.K8S_NAMESPACE, c.METRICS_PATH)")
MODEL_NAME := $(word 1,$(CONTRACT))
GRPC_PORT ?= $(word 2,$(CONTRACT))
REST_PORT ?= $(word 3,$(CONTRACT))
K8S_NAMESPACE := $(word 4,$(CONTRACT))
METRICS_PATH := $(word 5,$(CONTRACT))
MODEL_DIR := models/$(MODEL_NAME)
# Highest version under models/imdb (the one the image bakes in), by serving/versions.py's rule.
MODEL_VERSION ?= $(shell $(PYTHON_BOOTSTRAP) -m serving versions $(MODEL_DIR) --latest 2>/dev/null)
# Image repository (no tag); for `make deploy` it includes the registry.
IMAGE ?= imdb-sentiment-serving
TAG ?= $(if $(MODEL_VERSION),v$(MODEL_VERSION),dev)
COMPOSE := docker compose -f docker/docker-compose.yml
# Where `make deploy` goes: gke or eks (the current kubectl context picks the cluster).
CLOUD ?=

# Training data: a path (Kaggle CSV, plain or .gz, or aclImdb/ folder) or `auto`.
DATA ?= auto
# Extra flags for `python -m training train`, e.g. TRAIN_ARGS="--max-epochs 5" or
# TRAIN_ARGS="--config reports/tune/default/best_config.json".
TRAIN_ARGS ?=
# Grid for `make tune`: a JSON object of TrainConfig field -> list of values.
GRID ?= training/grids/default.json
# Extra flags for `make loadtest` and `make capacity`, e.g. LOADTEST_ARGS="--duration 30".
LOADTEST_ARGS ?=
CAPACITY_ARGS ?=
# Model repository mode (docs/deploy.md). REPOSITORY: where versions are published (a folder,
# gs://bucket/imdb or s3://bucket/imdb). MODELS_CONFIG: the models.config the servers follow;
# with CLOUD=gke-repository or eks-repository it is that overlay's file and the rollout verbs
# reach the pods through kubectl; otherwise they reach the servers at REST_URLS.
REPOSITORY ?=
MODELS_CONFIG ?= $(if $(filter %-repository,$(CLOUD)),k8s/overlays/$(CLOUD)/models.config)
REST_URLS ?= http://127.0.0.1:$(REST_PORT)
# Extra flags for the rollout verbs, e.g. ROLLOUT_ARGS="--min-agreement 0.98 --timeout 600".
ROLLOUT_ARGS ?=
ROLLOUT_TARGET = --config "$(MODELS_CONFIG)" $(if $(filter %-repository,$(CLOUD)),--namespace \
	$(K8S_NAMESPACE),$(foreach url,$(REST_URLS),--rest-url $(url))) $(if $(DRY_RUN),--dry-run) $(ROLLOUT_ARGS)
# Extra flags for pytest, e.g. PYTEST_ARGS="-k smoke -x".
PYTEST_ARGS ?=
# Test cases per operation and phase for `make fuzz` (make test runs 10).
FUZZ_EXAMPLES ?= 200

# Quiet TensorFlow's C++ start-up chatter in every command below.
export TF_CPP_MIN_LOG_LEVEL ?= 2
# The Dockerfiles use BuildKit (cache and secret mounts); Docker 20.10's CLI needs this to use it.
export DOCKER_BUILDKIT := 1

.PHONY: help env tools system-tools docker-engine docker-engine-stop docker-standin demo test test-slow fuzz explore train tune bench-train bench-graph serve smoke metrics loadtest capacity bench-serve bench-containers docker-build deploy rollback \
	deploy-smoke publish canary promote rollback-model lint format lock clean distclean

help: ## List the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'
	@echo "  Variables: DATA=$(DATA) REST_PORT=$(REST_PORT) GRPC_PORT=$(GRPC_PORT) IMAGE=$(IMAGE)"

env: $(STAMP) ## Create .venv with the pinned dependencies (requirements.lock)

tools: $(TOOLS_STAMP) ## Create .tools with the pinned offline validators (requirements-tools.lock)

$(TOOLS_STAMP): requirements-tools.lock
	@test -x $(TOOLS)/bin/python || $(PYTHON_BOOTSTRAP) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-tools.lock
	@rm -f $(TOOLS)/.installed-*
	@touch $@

$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP) ## Train, export, serve, smoke-test over REST + gRPC, predict, stop
	PY=$(PY) DATA="$(DATA)" REST_PORT=$(REST_PORT) GRPC_PORT=$(GRPC_PORT) \
		TRAIN_ARGS="$(TRAIN_ARGS)" scripts/demo.sh

system-tools: ## Install Debian's prometheus (prometheus, promtool) for the monitoring tests, as root
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's prometheus (promtool and a Prometheus server for the tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus >/dev/null; \
	else echo "prometheus/promtool missing and not root: the monitoring tests will skip"; fi

docker-engine: ## As root on Debian: install docker.io, compose v2, buildx, podman; start dockerd if none answers
	@scripts/docker_engine.sh start

docker-engine-stop: ## Stop the dockerd that make docker-engine started (by its pid)
	@scripts/docker_engine.sh stop

docker-standin: ## Build (or reuse) the stand-in base images the Docker tests use where no registry answers
	tests/docker/standin/build.sh

test: $(STAMP) $(TOOLS_STAMP) system-tools docker-engine ## Run the tests: unit, integration, offline deploy validation, containers
	TOOLS_BIN=$(CURDIR)/$(TOOLS)/bin $(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP) $(TOOLS_STAMP) system-tools docker-engine ## Also run the slow tests (full IMDB data: DATA=path/to/train.csv.gz)
	IMDB_DATA="$(DATA)" TOOLS_BIN=$(CURDIR)/$(TOOLS)/bin $(PY) -m pytest -m "slow or not slow" \
		$(PYTEST_ARGS)

fuzz: $(STAMP) ## Fuzz the local server's REST API from serving/openapi.yaml (FUZZ_EXAMPLES per operation)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/integration/test_openapi.py -k fuzzing $(PYTEST_ARGS)

train: $(STAMP) ## Train on DATA and export a new version under models/imdb/
	$(PY) -m training train --data "$(DATA)" --model-dir $(MODEL_DIR) $(TRAIN_ARGS)

explore: $(STAMP) ## Data metrics, plots and recommended model for DATA -> reports/explore/
	$(PY) -m training explore --data "$(DATA)" --out reports/explore

bench-train: $(STAMP) ## Benchmark both model families vs a scikit-learn baseline on DATA -> reports/
	$(PY) -m training bench --data "$(DATA)" --out reports

bench-graph: $(STAMP) ## Serving-graph throughput and latency, new vs legacy featurizer, on DATA -> reports/
	$(PY) -m training bench-graph --data "$(DATA)" --out reports

tune: $(STAMP) ## Grid search (GRID=...) on DATA's grouped validation split; resumable
	$(PY) -m training tune --data "$(DATA)" --grid "$(GRID)"

serve: $(STAMP) ## Serve models/imdb (or MODELS_CONFIG): compose with tensorflow/serving if an engine can run it, else the local server
	@if reason=$$(scripts/docker_serving.sh); then \
		test -n "$(MODEL_VERSION)" || { echo "No model under $(MODEL_DIR): run make train"; exit 1; }; \
		echo "Docker engine found: serving version $(MODEL_VERSION) with tensorflow/serving"; \
		MODEL_VERSION=$(MODEL_VERSION) IMAGE=$(IMAGE):$(TAG) GIT_REVISION=$$(git rev-parse HEAD) \
			REST_PORT=$(REST_PORT) GRPC_PORT=$(GRPC_PORT) $(COMPOSE) up --build; \
	else \
		echo "$$reason: serving $(MODEL_DIR) with the local TF-Serving-compatible server"; \
		$(PY) -m serving.model_server --port=$(GRPC_PORT) --rest_api_port=$(REST_PORT) \
			$(if $(MODELS_CONFIG),--model_config_file=$(MODELS_CONFIG) \
			--model_config_file_poll_wait_seconds=2 --file_system_poll_wait_seconds=2, \
			--model_name=$(MODEL_NAME) --model_base_path=$(CURDIR)/$(MODEL_DIR)) \
			--bind_address=127.0.0.1 --monitoring_config_file=k8s/base/config/monitoring.config \
			--enable_batching --batching_parameters_file=k8s/base/config/batching.config; \
	fi

smoke: $(STAMP) ## Smoke-test a running server (REST_URL, GRPC_TARGET; LABEL=canary checks a label)
	$(PY) scripts/smoke_test.py --rest-url $(or $(REST_URL),http://127.0.0.1:$(REST_PORT)) \
		--grpc-target $(or $(GRPC_TARGET),127.0.0.1:$(GRPC_PORT)) --model-name $(MODEL_NAME) \
		$(if $(LABEL),--label $(LABEL))

metrics: $(STAMP) ## Print the TF Serving metrics of REST_URL (default: the local port)
	@$(PY) -c 'import requests, sys; response = requests.get(sys.argv[1], timeout=10); \
		response.raise_for_status(); \
		print(*(line for line in response.text.splitlines() if line.startswith(":tensorflow")), sep="\n")' \
		$(or $(REST_URL),http://127.0.0.1:$(REST_PORT))$(METRICS_PATH)

loadtest: $(STAMP) ## Load-test REST_URL and GRPC_TARGET (default: the local ports) -> reports/loadtest/
	$(PY) -m serving loadtest --rest-url $(or $(REST_URL),http://127.0.0.1:$(REST_PORT)) \
		--grpc-target $(or $(GRPC_TARGET),127.0.0.1:$(GRPC_PORT)) --open-loop $(LOADTEST_ARGS)

capacity: $(STAMP) ## Capacity plan from reports/loadtest: TARGET_RPS=... [CAPACITY_ARGS=...]
	$(PY) -m serving capacity --target-rps "$(TARGET_RPS)" $(CAPACITY_ARGS)

bench-serve: $(STAMP) ## Local server, batching off vs on, under load -> reports/bench-serve/
	$(PY) -m serving bench-serve --model-dir $(MODEL_DIR)

bench-containers: $(STAMP) docker-engine ## Stop under load and memory under the compose limit, on a real engine -> reports/bench-containers/
	rm -rf reports/bench-containers
	FAULTS_REPORT_DIR=$(CURDIR)/reports/bench-containers FAULTS_MEMORY_SECONDS=180 \
		$(if $(MODEL_VERSION),FAULTS_MODEL_VERSION_DIR=$(CURDIR)/$(MODEL_DIR)/$(MODEL_VERSION)) \
		$(PY) -m pytest -q -p no:cacheprovider tests/docker/test_faults.py \
		tests/docker/test_compose.py -k "stop or memory or drain"
	$(PY) -m tests.docker.faults reports/bench-containers

docker-build: ## Build the tensorflow/serving image with the latest version baked in [TF_SERVING_IMAGE=...]
	@test -n "$(MODEL_VERSION)" || { echo "No model under $(MODEL_DIR): run make train"; exit 1; }
	@reason=$$(TF_SERVING_IMAGE="$(TF_SERVING_IMAGE)" scripts/docker_serving.sh) || { \
		echo "docker-build: $$reason (make docker-standin builds a stand-in base for tests)"; exit 1; }
	docker build -f docker/Dockerfile --build-arg MODEL_VERSION=$(MODEL_VERSION) \
		$(if $(TF_SERVING_IMAGE),--build-arg TF_SERVING_IMAGE=$(TF_SERVING_IMAGE)) \
		--build-arg GIT_REVISION=$$(git rev-parse HEAD) -t $(IMAGE):$(TAG) .

deploy: $(STAMP) ## Build, push, apply, wait, smoke: CLOUD=gke|eks[-repository] IMAGE=registry/repo [DRY_RUN=1]
	PY=$(PY) scripts/deploy.sh deploy --cloud "$(CLOUD)" --image "$(IMAGE)" \
		$(if $(MODEL_VERSION),--model-version $(MODEL_VERSION)) $(if $(DRY_RUN),--dry-run)

rollback: $(STAMP) ## Roll the Deployment back one revision and smoke-test: CLOUD=gke|eks[-repository]
	PY=$(PY) scripts/deploy.sh rollback --cloud "$(CLOUD)" $(if $(DRY_RUN),--dry-run)

deploy-smoke: $(STAMP) ## Smoke-test the deployed service through kubectl port-forward
	PY=$(PY) scripts/deploy.sh smoke

publish: $(STAMP) ## Check version MODEL_VERSION (default: the latest) and upload it to REPOSITORY [DRY_RUN=1]
	@test -n "$(REPOSITORY)" || { echo "Set REPOSITORY=folder, gs://bucket/imdb or s3://bucket/imdb"; exit 2; }
	@test -n "$(MODEL_VERSION)" || { echo "No model under $(MODEL_DIR): run make train"; exit 2; }
	$(PY) -m serving rollout publish --repository "$(REPOSITORY)" \
		--version-dir $(MODEL_DIR)/$(MODEL_VERSION) $(if $(DRY_RUN),--dry-run)

canary: $(STAMP) ## Load the newest published version (or CANARY_VERSION) beside stable, label it canary, compare
	$(call need_models_config)
	$(PY) -m serving rollout canary $(ROLLOUT_TARGET) $(if $(CANARY_VERSION),--version $(CANARY_VERSION)) \
		$(if $(REPOSITORY),--repository "$(REPOSITORY)")

promote: $(STAMP) ## Move stable to the canary's version; the old one stays loaded as previous
	$(call need_models_config)
	$(PY) -m serving rollout promote $(ROLLOUT_TARGET)

rollback-model: $(STAMP) ## Withdraw the canary, or move stable back to previous (no image build)
	$(call need_models_config)
	$(PY) -m serving rollout rollback $(ROLLOUT_TARGET)

define need_models_config
	@test -n "$(MODELS_CONFIG)" || { echo "Set CLOUD=gke-repository|eks-repository or MODELS_CONFIG=path/to/models.config"; exit 2; }
endef

lint: $(STAMP) $(TOOLS_STAMP) ## Lint Python (ruff), Dockerfiles (hadolint), YAML (yamllint)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(TOOLS)/bin/hadolint docker/Dockerfile docker/smoke.Dockerfile docker/sync.Dockerfile
	$(TOOLS)/bin/yamllint --strict k8s docker/docker-compose.yml .yamllint.yaml .checkov.yaml

format: $(STAMP) ## Format the Python code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: ## Re-resolve requirements*.in into requirements*.lock in fresh environments
	$(call lock_env,requirements.lock,-r requirements.in -r requirements-dev.in)
	$(call lock_env,requirements-tools.lock,-r requirements-tools.in)

# $(call lock_env,LOCK,PIP_ARGS): install PIP_ARGS into a fresh venv and freeze it into LOCK.
define lock_env
	rm -rf .lock-env && $(PYTHON_BOOTSTRAP) -m venv .lock-env
	.lock-env/bin/pip install --quiet --disable-pip-version-check $(2)
	{ echo "# Generated by 'make lock' from $(2) on Python 3.11 (Linux x86_64). Do not edit."; \
	  .lock-env/bin/pip freeze --disable-pip-version-check | sort -f; } > $(1)
	rm -rf .lock-env
endef

clean: ## Remove caches and reports (keeps .venv, models/ and data/)
	rm -rf .pytest_cache .ruff_cache reports artifacts
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean ## Also remove .venv, models/ and the generated demo data
	rm -rf $(VENV) $(TOOLS) models data/demo
