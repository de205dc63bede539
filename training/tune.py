"""Grid search over vectoriser and model settings, scored on the grouped validation split.

The grid is a JSON object of ``TrainConfig`` field -> list of values, expanded by scikit-learn's
``ParameterGrid``. Trials that share the vectoriser settings (``VECTORIZER_FIELDS``) share one
vocabulary selection and one featurisation of the data, so a grid over model settings costs one
vectorisation. Each finished trial is appended to ``trials.jsonl`` at once: an interrupted search
keeps its finished trials, and running the same command again resumes where it stopped.

Outputs in ``--out``: ``trials.jsonl`` (every trial), ``results.csv`` and ``results.md`` (sorted,
best first) and ``best_config.json`` (for ``python -m training train --config``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics
from sklearn.model_selection import ParameterGrid
from tqdm import tqdm

from training import data as data_lib
from training.config import TrainConfig
from training.evaluate import classification_report
from training.train import build_features, fit_classifier, resolve_model
from training.vectorize import featurize

logger = logging.getLogger(__name__)

# Settings that change the split or the features; trials that agree on them share one
# featurisation.
VECTORIZER_FIELDS = (
    "model",
    "validation_fraction",
    "seed",
    "ngram_max",
    "max_features",
    "min_document_frequency",
    "weighting",
    "sepcnn_max_words",
    "sepcnn_sequence_length",
)
# Columns of the results table, after the grid's own fields.
SCORE_COLUMNS = ("val_accuracy", "val_roc_auc", "val_loss", "epochs", "seconds")


@dataclass(frozen=True)
class TuneResult:
    """Where the search wrote its outputs, and the best trial."""

    results: pd.DataFrame
    best_config: TrainConfig
    out_dir: Path


def read_grid(path: str | Path) -> list[dict]:
    """The trials of a grid file: a JSON object of TrainConfig field -> list of values."""
    path = Path(path)
    try:
        grid = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read a JSON grid: {error}") from error
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"{path}: a grid is a non-empty JSON object of field -> list of values")
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    for key, values in grid.items():
        if key not in known:
            raise ValueError(f"{path}: unknown field {key!r}; known: {', '.join(sorted(known))}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: {key!r} must map to a non-empty list of values")
    trials = list(ParameterGrid(grid))
    for trial in trials:  # every combination must be a valid config, before any work starts
        TrainConfig().replace(**trial)
    return trials


def trial_key(config: TrainConfig) -> str:
    """A stable identifier of a config, for resuming."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tune(
    data_path: str | Path,
    grid_path: str | Path,
    out_dir: str | Path,
    base_config: TrainConfig | None = None,
) -> TuneResult:
    """Runs every trial of the grid that ``out_dir`` has not finished yet; writes the tables.

    Raises:
        ValueError: bad data or grid.
    """
    base_config = base_config or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = read_grid(grid_path)
    trials = [base_config.replace(**overrides) for overrides in grid]
    grid_fields = sorted({key for overrides in grid for key in overrides})
    log_path = out_dir / "trials.jsonl"
    finished = _read_finished(log_path)
    pending = [config for config in trials if trial_key(config) not in finished]
    logger.info(
        "Grid: %d trial(s), %d already finished in %s, %d to run",
        len(trials),
        len(trials) - len(pending),
        log_path,
        len(pending),
    )
    if pending:
        _run_trials(data_path, pending, log_path)
    finished = _read_finished(log_path)
    # Best first: highest accuracy, then lowest loss; ties keep the grid's order.
    rows = sorted(
        (finished[trial_key(config)] for config in trials),
        key=lambda row: (-row["val_accuracy"], row["val_loss"]),
    )
    results = pd.DataFrame(
        [
            {**{f: row["config"][f] for f in grid_fields}, **{c: row[c] for c in SCORE_COLUMNS}}
            for row in rows
        ]
    )
    best = TrainConfig(**rows[0]["config"])
    results.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "results.md").write_text(_markdown(results), encoding="utf-8")
    (out_dir / "best_config.json").write_text(
        json.dumps(best.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return TuneResult(results, best, out_dir)


def _run_trials(data_path: str | Path, pending: list[TrainConfig], log_path: Path) -> None:
    first_config = pending[0]
    prepared = data_lib.prepare(data_path, first_config.validation_fraction, first_config.seed)
    splits: dict[tuple, data_lib.Split] = {}
    # Trials keep the key of the grid's config; they run (and are recorded) with "auto" resolved.
    groups: dict[tuple, list[tuple[str, TrainConfig]]] = {}
    for grid_config in pending:
        config = resolve_model(grid_config, prepared.frame)
        key = tuple(getattr(config, field) for field in VECTORIZER_FIELDS)
        groups.setdefault(key, []).append((trial_key(grid_config), config))
    progress = tqdm(
        total=len(pending), desc="trials", disable=None if sys.stderr.isatty() else True
    )
    done = 0
    with progress:
        for configs in groups.values():
            first = configs[0][1]
            split_key = (first.validation_fraction, first.seed)
            if split_key not in splits:
                splits[split_key] = prepared.with_split(*split_key).split
            split = splits[split_key]
            train_texts, train_labels = split.train_texts, split.train_labels
            validation_labels = split.validation_labels
            started = time.monotonic()
            features = build_features(train_texts, train_labels, first)
            train_matrix = featurize(features, train_texts)
            validation_matrix = featurize(features, split.validation_texts)
            vectorize_seconds = time.monotonic() - started
            for key, config in configs:
                started = time.monotonic()
                classifier, epochs = fit_classifier(
                    train_matrix,
                    train_labels,
                    features,
                    config,
                    validation=(validation_matrix, validation_labels),
                )
                probabilities = classifier(validation_matrix, training=False).numpy().reshape(-1)
                report = classification_report(validation_labels, probabilities)
                row = {
                    "key": key,
                    "config": config.to_dict(),
                    "val_accuracy": report["accuracy"],
                    "val_roc_auc": report["roc_auc"],
                    "val_loss": float(
                        metrics.log_loss(validation_labels, np.clip(probabilities, 1e-7, 1 - 1e-7))
                    ),
                    "epochs": epochs,
                    # The shared vectorisation is charged to the group's first trial.
                    "seconds": round(
                        time.monotonic() - started + (vectorize_seconds if config is first else 0),
                        1,
                    ),
                }
                with log_path.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(row, sort_keys=True) + "\n")
                done += 1
                progress.update(1)
                logger.info(
                    "[%d/%d] %s -> val accuracy %.4f, ROC AUC %.4f (%d epochs, %.0f s)",
                    done,
                    len(pending),
                    _describe(config),
                    row["val_accuracy"],
                    row["val_roc_auc"],
                    epochs,
                    row["seconds"],
                )


def _read_finished(log_path: Path) -> dict[str, dict]:
    finished: dict[str, dict] = {}
    if not log_path.exists():
        return finished
    for number, line in enumerate(log_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            finished[row["key"]] = row
        except (json.JSONDecodeError, KeyError):
            # A line cut short by an interruption: that trial runs again.
            logger.warning("%s: line %d is incomplete and is ignored", log_path, number)
    return finished


def _describe(config: TrainConfig) -> str:
    defaults = TrainConfig().to_dict()
    changed = {k: v for k, v in config.to_dict().items() if defaults[k] != v}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"


def _markdown(results: pd.DataFrame) -> str:
    header = "| " + " | ".join(results.columns) + " |"
    rule = "| " + " | ".join("---" for _ in results.columns) + " |"
    lines = [header, rule]
    for row in results.itertuples(index=False):
        cells = [
            f"{value:.4f}"
            if column.startswith("val_")
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
            for column, value in zip(results.columns, row, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
