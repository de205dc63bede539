"""Training configuration: defaults, validation, files."""

from __future__ import annotations

import json

import pytest

from training.config import TrainConfig


def test_defaults_are_valid_and_round_trip(tmp_path):
    config = TrainConfig()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.from_file(path) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"max_features": 0}, "max_features"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_invalid_values_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig().replace(**change)


def test_unknown_keys_and_bad_json_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"hiden_units": 3}')
    with pytest.raises(ValueError, match="unknown training config key"):
        TrainConfig.from_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        TrainConfig.from_file(path)
