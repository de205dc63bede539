# The model sync sidecar of k8s/overlays/eks-repository: serving/s3_sync.py, which copies the
# versions that models.config names from S3 into the pod's model folder. It needs boto3 and TF
# Serving's config protos only (tensorflow-serving-api without its TensorFlow dependency).
#   docker build -f docker/sync.Dockerfile -t imdb-model-sync .
# The base, an exact tag; where no registry answers, tests/docker/standin/build.sh passes a
# stand-in built here (--build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG SYNC_UID=10001

WORKDIR /app
COPY requirements.lock /app/requirements.lock
# At the versions the project pins; the config protos import only protobuf. pip_ca: an optional
# CA bundle for a TLS-intercepting proxy (docker build --secret id=pip_ca,src=FILE), never stored.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --no-cache-dir --constraint /app/requirements.lock boto3 protobuf \
    && pip install --no-cache-dir --no-deps --constraint /app/requirements.lock \
      tensorflow-serving-api

# Exactly the modules the sidecar imports (a test checks the list).
COPY serving/__init__.py serving/contract.py serving/model_config.py serving/versions.py \
     serving/repository.py serving/s3_sync.py /app/serving/

# The model folder the sidecar fills, owned by its user: a new Docker volume mounted here takes
# that owner (Kubernetes' emptyDir is writable to the pod's fsGroup anyway).
RUN mkdir /models && chown ${SYNC_UID}:${SYNC_UID} /models

USER ${SYNC_UID}:${SYNC_UID}
# PYTHONPATH: `python -m serving.s3_sync` imports from /app whatever the container's workingDir.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/app
# Kubernetes checks it with a startupProbe on --ready-file; after that, a crash restarts it.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "serving.s3_sync"]
CMD ["--help"]
