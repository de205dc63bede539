#!/bin/bash
# The official image's entrypoint, in behaviour: one command, no `exec` (bash stays PID 1 when
# the image is run without an init), the container's arguments last.
tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME} --model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME} "$@"
