"""The grid search command: grids, tables, resuming."""

from __future__ import annotations

import json

import pytest

from tests.helpers import PROJECT_ROOT, TINY_TRAINING
from training.config import TrainConfig
from training.tune import read_grid, tune

TINY_GRID = {"max_features": [300, 800], "hidden_units": [4, 8]}


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(TINY_GRID))
    return path


def test_tune_writes_sorted_tables_and_a_usable_best_config(tmp_path, demo_csv, grid_file):
    base = TrainConfig(**TINY_TRAINING).replace(max_epochs=3)
    result = tune(demo_csv, grid_file, tmp_path / "out", base)
    assert len(result.results) == 4
    accuracies = result.results["val_accuracy"].tolist()
    assert accuracies == sorted(accuracies, reverse=True)
    assert set(result.results.columns) >= {
        "max_features",
        "hidden_units",
        "val_accuracy",
        "val_roc_auc",
    }
    table = (tmp_path / "out" / "results.md").read_text().splitlines()
    assert table[0].startswith("| hidden_units | max_features | val_accuracy") and len(table) == 6
    best = TrainConfig.from_file(tmp_path / "out" / "best_config.json")
    assert best == result.best_config
    assert best.max_epochs == 3  # fields outside the grid come from the base config
    first = result.results.iloc[0]
    assert (best.max_features, best.hidden_units) == (first["max_features"], first["hidden_units"])


def test_tune_resumes_and_survives_a_cut_line(tmp_path, demo_csv, grid_file):
    base = TrainConfig(**TINY_TRAINING).replace(max_epochs=2)
    out = tmp_path / "out"
    tune(demo_csv, grid_file, out, base)
    log = out / "trials.jsonl"
    lines = log.read_text().splitlines()
    # Simulate an interruption: the last trial's line was cut short.
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2] + "\n")
    result = tune(demo_csv, grid_file, out, base)
    rerun = [json.loads(line) for line in log.read_text().splitlines()[len(lines) :]]
    assert len(rerun) == 1  # only the lost trial ran again
    assert len(result.results) == 4


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("[1, 2]", "non-empty JSON object"),
        ('{"hiden_units": [1]}', "unknown field 'hiden_units'"),
        ('{"hidden_units": 4}', "non-empty list"),
        ('{"dropout_rate": [0.5, 1.5]}', "dropout_rate"),
        ("{broken", "cannot read"),
    ],
)
def test_bad_grids_are_refused_before_any_work(tmp_path, grid, message):
    path = tmp_path / "grid.json"
    path.write_text(grid)
    with pytest.raises(ValueError, match=message):
        read_grid(path)


@pytest.mark.parametrize("grid", sorted((PROJECT_ROOT / "training" / "grids").glob("*.json")))
def test_shipped_grids_are_valid(grid):
    # read_grid refuses unknown fields and values that make an invalid TrainConfig.
    assert len(read_grid(grid)) >= 2
