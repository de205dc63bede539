"""Training runs: determinism, the model-family rule, what a version records."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import TINY_TRAINING
from training import data as data_lib
from training.config import TrainConfig


def test_the_same_seed_gives_the_same_metrics(tmp_path, demo_csv):
    from training.sources import DataSource
    from training.train import train_and_export

    config = TrainConfig(**TINY_TRAINING).replace(max_epochs=4)
    runs = [
        train_and_export(DataSource(demo_csv, "demo"), config, tmp_path / "models").evaluation
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    other = train_and_export(
        DataSource(demo_csv, "demo"), config.replace(seed=1), tmp_path / "other"
    )
    assert other.evaluation["split"] == runs[0]["split"]  # same data, different seed


def test_auto_picks_the_family_by_the_samples_to_words_ratio(caplog):
    import logging

    import pandas as pd

    from training.train import resolve_model

    few_long = pd.DataFrame({"review": ["word " * 200] * 100, "label": [0, 1] * 50})
    many_short = pd.DataFrame({"review": ["great"] * 3000, "label": [0, 1] * 1500})
    with caplog.at_level(logging.INFO):
        assert resolve_model(TrainConfig(), few_long).model == "mlp"
        assert resolve_model(TrainConfig(), many_short).model == "sepcnn"
    assert "ratio 0.5 -> mlp" in caplog.text and "ratio 3000.0 -> sepcnn" in caplog.text
    assert resolve_model(TrainConfig(model="sepcnn"), few_long).model == "sepcnn"


def test_auto_records_the_family_it_resolved_with_the_export(tmp_path, demo_csv):
    from training.sources import DataSource
    from training.train import resolve_model, train_and_export

    config = TrainConfig(**TINY_TRAINING).replace(model="auto")
    prepared = data_lib.prepare(demo_csv, config.validation_fraction, config.seed)
    expected = resolve_model(config, prepared.frame).model
    source = DataSource(demo_csv, "demo")
    result = train_and_export(source, config, tmp_path / "imdb", prepared=prepared)
    recorded_file = result.export_path / "assets.extra" / "training_config.json"
    recorded = json.loads(recorded_file.read_text())
    assert recorded["model"] == expected != "auto"


def test_prepared_data_must_match_the_configs_split(tmp_path, demo_csv):
    from training.sources import DataSource
    from training.train import train_and_export

    prepared = data_lib.prepare(demo_csv, validation_fraction=0.2, seed=0)
    assert prepared.with_split(0.2, 0) is prepared
    assert prepared.with_split(0.25, 0).summary()["validation"] != prepared.summary()["validation"]
    config = TrainConfig(**TINY_TRAINING).replace(seed=1)
    with pytest.raises(ValueError, match=re.escape("split with validation_fraction=0.2, seed=0")):
        train_and_export(DataSource(demo_csv, "demo"), config, tmp_path, prepared=prepared)
