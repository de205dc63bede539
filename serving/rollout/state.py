"""The rollout state: one model's versions and labels in ``models.config``, read and edited.

Every rollout step is one call of ``with_state`` and one ``write_config``. Needs protobuf and
tensorflow-serving-api's config protos only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.contract import MODEL_NAME
from serving.model_config import model_entry, read_model_server_config
from serving.rollout import RolloutError

# The version labels the rollout moves; any other label of the model is kept as it is.
STABLE, CANARY, PREVIOUS = "stable", "canary", "previous"
ROLLOUT_LABELS = (STABLE, CANARY, PREVIOUS)


def labels_of(model: model_server_config_pb2.ModelConfig) -> dict[str, int]:
    """Every version label of one model: label -> version."""
    return {label: int(version) for label, version in model.version_labels.items()}


def read_state(
    path: Path, model_name: str = MODEL_NAME
) -> tuple[model_server_config_pb2.ModelServerConfig, list[int], dict[str, int]]:
    """The whole config, and the model's specific versions and labels.

    Raises:
        ModelConfigError: the file cannot be read or parsed, or lacks the model.
        RolloutError: the model has no ``stable`` label, so no rollout can start from it.
    """
    config = read_model_server_config(path)
    model = model_entry(config, model_name)
    labels = labels_of(model)
    if STABLE not in labels:
        raise RolloutError(
            f"{path} has no '{STABLE}' label for {model_name!r}: start from a repository "
            "overlay's models.config (docs/deploy.md)"
        )
    return config, list(model.model_version_policy.specific.versions), labels


def with_state(
    config: model_server_config_pb2.ModelServerConfig,
    versions: Sequence[int],
    labels: dict[str, int],
    model_name: str = MODEL_NAME,
) -> model_server_config_pb2.ModelServerConfig:
    """A copy of ``config`` in which ``model_name`` has the rollout labels ``labels`` and serves
    ``versions``; every other model and every other label of this one stay as they are.

    A label the rollout does not own (say ``shadow``) keeps its version loaded too: TF Serving
    refuses a config whose label names a version it does not load.
    """
    new = model_server_config_pb2.ModelServerConfig()
    new.CopyFrom(config)
    model = model_entry(new, model_name)
    kept = {k: v for k, v in labels_of(model).items() if k not in ROLLOUT_LABELS}
    model.model_version_policy.specific.Clear()
    model.model_version_policy.specific.versions.extend(sorted({*versions, *kept.values()}))
    model.version_labels.clear()
    for label, version in {**kept, **labels}.items():
        model.version_labels[label] = version
    return new


def initial_config(base_path: str, version: int) -> model_server_config_pb2.ModelServerConfig:
    """A config with the contract's model serving ``version`` of ``base_path`` as ``stable``."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(
        name=MODEL_NAME, base_path=base_path, model_platform="tensorflow"
    )
    model.model_version_policy.specific.versions.append(version)
    model.version_labels[STABLE] = version
    return config


def config_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    """The text format TF Serving reads."""
    return text_format.MessageToString(config)


def write_config(path: Path, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Replaces the file atomically: a server polling it reads the old or the new config."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as stream:
        stream.write(config_text(config))
    os.chmod(stream.name, 0o644)
    os.replace(stream.name, path)
