"""Configuration of a training run: one frozen dataclass, validated on creation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The two model families; a config's ``model`` is one of them or "auto".
MODEL_FAMILIES = ("mlp", "sepcnn")
# Samples / median words per sample at and above which a sequence model beats n-grams (the
# threshold of Google's text classification guide).
SEQUENCE_MODEL_RATIO = 1500


def samples_to_words_ratio(num_samples: int, median_words: float) -> float:
    """The model-choice statistic: samples / median words per sample."""
    return num_samples / max(median_words, 1.0)


def recommend_model(samples_to_words_ratio: float) -> str:
    """ "mlp" (n-gram MLP) below ``SEQUENCE_MODEL_RATIO``, "sepcnn" (sequence CNN) from it on."""
    return "sepcnn" if samples_to_words_ratio >= SEQUENCE_MODEL_RATIO else "mlp"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what model a training run produces.

    The resolved config is written next to the exported model (``assets.extra/``), so every
    version says how it was made.
    """

    # Model family: "mlp" (n-gram MLP), "sepcnn" (sequence CNN), or "auto", which picks by the
    # ratio of samples to words per sample (recommend_model above).
    model: str = "auto"
    # Seed for the split, weight initialisation, dropout and shuffling.
    seed: int = 0
    # Share of the reviews held out for validation (early stopping and the reported metrics).
    validation_fraction: float = 0.2
    # Longest n-gram; the featurizer uses every length from 1 to this.
    ngram_max: int = 3
    # Number of n-grams kept by ANOVA F-value feature selection (the first layer's input width).
    max_features: int = 100_000
    # N-grams that occur in fewer training reviews are dropped before selection.
    min_document_frequency: int = 2
    # Weight of a present n-gram: "nb" (naive-Bayes log-count ratio) or "idf".
    weighting: str = "nb"
    # Dense layers in the MLP, the sigmoid output layer included.
    num_layers: int = 2
    # Width of each hidden Dense layer (`make tune`: 64 beat 32 on the grouped validation split).
    hidden_units: int = 64
    # Dropout after every hidden Dense layer.
    dropout_rate: float = 0.5
    # Adam learning rate.
    learning_rate: float = 1e-3
    # Reviews per gradient step.
    batch_size: int = 128
    # Upper bound on epochs; early stopping usually ends training sooner.
    max_epochs: int = 20
    # Epochs without a better validation loss before training stops (best weights restored).
    early_stopping_patience: int = 2
    # sepCNN: words kept (most frequent), words read per review, and the network's sizes.
    sepcnn_max_words: int = 20_000
    sepcnn_sequence_length: int = 400
    sepcnn_embedding_dim: int = 64
    sepcnn_filters: int = 64
    sepcnn_kernel_size: int = 3
    # Blocks of two separable convolutions; all but the last end in max-pooling.
    sepcnn_blocks: int = 2
    sepcnn_dropout_rate: float = 0.2
    # After validation picks the epoch count, retrain from scratch (vocabulary included) on all
    # reviews for that many epochs and export that model. The reported metrics stay those of
    # the held-out validation run.
    refit_on_all_data: bool = True

    def __post_init__(self) -> None:
        checks = {
            "validation_fraction must be in (0, 1)": 0.0 < self.validation_fraction < 1.0,
            "model must be 'auto', 'mlp' or 'sepcnn'": self.model in ("auto", *MODEL_FAMILIES),
            "ngram_max must be 1 or more": self.ngram_max >= 1,
            "sepcnn sizes must be 1 or more": min(
                self.sepcnn_max_words,
                self.sepcnn_sequence_length,
                self.sepcnn_embedding_dim,
                self.sepcnn_filters,
                self.sepcnn_kernel_size,
                self.sepcnn_blocks,
            )
            >= 1,
            "sepcnn_dropout_rate must be in [0, 1)": 0.0 <= self.sepcnn_dropout_rate < 1.0,
            "weighting must be 'nb' or 'idf'": self.weighting in ("nb", "idf"),
            "max_features must be 1 or more": self.max_features >= 1,
            "min_document_frequency must be 1 or more": self.min_document_frequency >= 1,
            "num_layers must be 1 or more": self.num_layers >= 1,
            "hidden_units must be 1 or more": self.hidden_units >= 1,
            "dropout_rate must be in [0, 1)": 0.0 <= self.dropout_rate < 1.0,
            "learning_rate must be positive": self.learning_rate > 0.0,
            "batch_size must be 1 or more": self.batch_size >= 1,
            "max_epochs must be 1 or more": self.max_epochs >= 1,
            "early_stopping_patience must be 0 or more": self.early_stopping_patience >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("invalid training config: " + "; ".join(failed))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (and validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Reads a JSON object of field names to values; unknown names are an error."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read a JSON training config: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a JSON object")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown training config key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**values)
