"""``models.config``: TF Serving's text-format ``ModelServerConfig``, read in one place for the
local server (``--model_config_file``), the rollout verbs (``serving/rollout/``) and the EKS
sync sidecar (``serving/s3_sync.py``). Needs protobuf and tensorflow-serving-api's config
protos only, not TensorFlow (the sidecar's image has no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.contract import MODEL_NAME


class ModelConfigError(Exception):
    """The file cannot be read or parsed, or lacks the model; the message says which."""


def read_model_server_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    """Parses the file with protobuf's text-format parser, as TF Serving does.

    Raises:
        ModelConfigError: unreadable, or a syntax error (TF Serving's message, with the line).
    """
    return parse_model_server_config(read_model_config_text(path), path)


def read_model_config_text(path: str | Path) -> str:
    """The file's text, for a caller that keeps what it parsed (the local server's watcher).

    Raises:
        ModelConfigError: the file cannot be read, or is not UTF-8.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ModelConfigError(f"Cannot read {path}: {error}") from error


def parse_model_server_config(
    text: str, path: str | Path
) -> model_server_config_pb2.ModelServerConfig:
    """Parses ``text``, read from ``path`` (named in the error), as TF Serving does.

    Raises:
        ModelConfigError: a syntax error (TF Serving's message, with the line).
    """
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ModelConfigError(
            f"Error parsing text-format tensorflow.serving.ModelServerConfig: {error}; "
            f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'"
        ) from error
    return config


def model_entry(
    config: model_server_config_pb2.ModelServerConfig, model_name: str = MODEL_NAME
) -> model_server_config_pb2.ModelConfig:
    """The ``model_config_list`` entry named ``model_name``."""
    for model in config.model_config_list.config:
        if model.name == model_name:
            return model
    raise ModelConfigError(f"models.config configures no model named {model_name!r}")
