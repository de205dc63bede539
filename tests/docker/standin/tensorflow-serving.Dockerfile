# Stand-in for tensorflow/serving:<tag> where no registry can be reached (README.md here): the
# project's local TF-Serving-compatible server at /usr/bin/tensorflow_model_server, in an image
# shaped like the official one where a container can see it: the same entrypoint script, MODEL_NAME
# and MODEL_BASE_PATH, ports, /models, root user, no HEALTHCHECK, STOPSIGNAL or CMD.
# Built by tests/docker/standin/build.sh (context: the project root), which passes PYTHON_IMAGE.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}

# The local server's dependencies, at the versions the project pins. The pip cache survives
# between builds on the same engine (a BuildKit cache mount), so a rebuild downloads nothing;
# pip_ca is an optional CA bundle for a TLS-intercepting proxy (never stored in the image).
COPY requirements.lock /opt/local-tfserving/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --constraint /opt/local-tfserving/requirements.lock \
      tensorflow tensorflow-serving-api grpcio grpcio-health-checking waitress prometheus-client

COPY serving/ /opt/local-tfserving/serving/
COPY tests/docker/standin/tensorflow_model_server.py /usr/bin/tensorflow_model_server
COPY tests/docker/standin/tf_serving_entrypoint.sh /usr/bin/tf_serving_entrypoint.sh
# Compiled now, so that the server writes no bytecode at run time (docker diff stays clean).
RUN python -m compileall -q /opt/local-tfserving \
    && mkdir -p /models

ENV MODEL_NAME=model \
    MODEL_BASE_PATH=/models
EXPOSE 8500 8501
ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
