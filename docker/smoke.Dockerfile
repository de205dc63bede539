# The smoke test as a container, for `docker compose --profile smoke up` (docker-compose.yml):
# the same scripts/smoke_test.py that runs against a cluster, with the pinned client packages.
# tensorflow-serving-api's gRPC protos import TensorFlow, so the image carries it (~1.5 GB);
# it is built only when the smoke profile is used.
# The base, an exact tag; where no registry answers, tests/docker/standin/build.sh passes a
# stand-in built here (--build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG SMOKE_UID=10001

WORKDIR /app
COPY requirements.lock /app/requirements.lock
# Only what the client needs, at the versions the project pins. pip_ca: an optional CA bundle
# for a TLS-intercepting proxy (docker build --secret id=pip_ca,src=FILE), never stored.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --no-cache-dir --constraint /app/requirements.lock \
      requests grpcio tensorflow-serving-api

COPY serving/ /app/serving/
COPY scripts/smoke_test.py /app/scripts/smoke_test.py

USER ${SMOKE_UID}:${SMOKE_UID}
# A one-shot job: its exit code is its health.
HEALTHCHECK NONE
ENTRYPOINT ["python", "/app/scripts/smoke_test.py"]
CMD ["--help"]
