"""Load labelled movie reviews into a pandas DataFrame, validate them, and split them.

Two layouts are read:
- the Kaggle "IMDB Dataset of 50K Movie Reviews" CSV: columns ``review,sentiment`` with sentiment
  ``positive|negative``; extra columns are ignored except ``movie_id``, which groups the split;
  plain or compressed (``.gz``, ``.bz2``, ``.zip`` holding one file, ``.xz``), told by the
  suffix as pandas infers it;
- the original ``aclImdb/`` folder: ``{train,test}/{pos,neg}/<id>_<rating>.txt``, with the
  movie of each review taken from ``urls_pos.txt``/``urls_neg.txt`` when they are present.

Every loader returns the same frame: ``review`` (str), ``sentiment`` (``positive|negative``),
``label`` (int 0/1, ``serving.contract.LABELS`` order) and, when known, ``movie_id``.
Bad input raises ``ValueError`` naming the file and the row or field.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import logging
import lzma
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from serving.contract import LABELS

logger = logging.getLogger(__name__)

REVIEW_COLUMN = "review"
SENTIMENT_COLUMN = "sentiment"
LABEL_COLUMN = "label"
GROUP_COLUMN = "movie_id"
# How many offending rows an error message lists before it summarises the rest.
MAX_ROWS_IN_ERROR = 5
# aclImdb review files are named <review id>_<star rating>.txt.
ACLIMDB_FILE_PATTERN = re.compile(r"^(\d+)_(\d+)\.txt$")
# The IMDb title id inside an aclImdb urls_*.txt line, e.g. http://www.imdb.com/title/tt0453418/...
IMDB_TITLE_PATTERN = re.compile(r"/title/(tt\d+)")
ACLIMDB_SPLITS = ("train", "test")
ACLIMDB_CLASS_FOLDERS = {"neg": LABELS[0], "pos": LABELS[1]}


@dataclass(frozen=True)
class DuplicateReport:
    """Reviews whose exact text occurs more than once.

    Attributes:
        duplicate_rows: rows that repeat the text of an earlier row.
        conflicting_texts: distinct texts that occur with both labels.
    """

    duplicate_rows: int
    conflicting_texts: int

    def __str__(self) -> str:
        return (
            f"{self.duplicate_rows} duplicate review(s), "
            f"{self.conflicting_texts} text(s) with conflicting labels"
        )


@dataclass(frozen=True)
class Split:
    """A train/validation split of one frame."""

    train: pd.DataFrame
    validation: pd.DataFrame
    grouped_by: str | None

    @property
    def train_texts(self) -> list[str]:
        return self.train[REVIEW_COLUMN].tolist()

    @property
    def train_labels(self) -> np.ndarray:
        """0/1 targets as float32, the model's target dtype."""
        return self.train[LABEL_COLUMN].to_numpy(np.float32)

    @property
    def validation_texts(self) -> list[str]:
        return self.validation[REVIEW_COLUMN].tolist()

    @property
    def validation_labels(self) -> np.ndarray:
        """0/1 targets as float32, the model's target dtype."""
        return self.validation[LABEL_COLUMN].to_numpy(np.float32)


@dataclass(frozen=True)
class PreparedData:
    """Reviews loaded, deduplicated and split: what train, tune and the benchmark start from.

    Attributes:
        frame: every review after dropping duplicates (what a refit on all data uses).
        duplicates: what was dropped.
        split: the train/validation split of ``frame``.
        validation_fraction, seed: the settings the split was made with.
    """

    frame: pd.DataFrame
    duplicates: DuplicateReport
    split: Split
    validation_fraction: float
    seed: int

    def with_split(self, validation_fraction: float, seed: int) -> PreparedData:
        """The same reviews split with other settings (no reload); self if they are the same."""
        if (validation_fraction, seed) == (self.validation_fraction, self.seed):
            return self
        split = split_train_validation(self.frame, validation_fraction, seed)
        return PreparedData(self.frame, self.duplicates, split, validation_fraction, seed)

    def summary(self) -> dict:
        """Sizes of the split, for evaluation reports."""
        return {
            "train": len(self.split.train),
            "validation": len(self.split.validation),
            "grouped_by": self.split.grouped_by,
            "duplicates_dropped": self.duplicates.duplicate_rows,
        }


def prepare(path: str | Path, validation_fraction: float = 0.2, seed: int = 0) -> PreparedData:
    """Loads reviews (``load_reviews``), drops duplicates and splits them; logs what it did.

    Raises:
        ValueError: the data is invalid or too small to split.
    """
    frame = load_reviews(path)
    duplicates = find_duplicates(frame)
    frame = drop_duplicates(frame)
    split = split_train_validation(frame, validation_fraction, seed)
    logger.info(
        "Data: %d reviews after dropping %s; %d train / %d validation%s",
        len(frame),
        duplicates,
        len(split.train),
        len(split.validation),
        f", grouped by {split.grouped_by}" if split.grouped_by else "",
    )
    return PreparedData(frame, duplicates, split, validation_fraction, seed)


def words_per_sample(reviews: pd.Series) -> np.ndarray:
    """Whitespace-separated words of each raw review (the model-choice statistic counts these)."""
    return reviews.str.split().str.len().to_numpy()


def load_reviews(path: str | Path, aclimdb_splits: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """Loads a Kaggle-style CSV file or an ``aclImdb/`` folder.

    Args:
        path: a CSV file (optionally compressed) or an aclImdb folder.
        aclimdb_splits: which aclImdb sub-folders to read; the official test split stays held
            out unless asked for.

    Returns:
        The validated frame described in the module docstring.

    Raises:
        ValueError: the path is missing or its content is not valid review data.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir():
        return load_aclimdb(path, splits=aclimdb_splits)
    return load_csv(path)


def load_csv(path: str | Path) -> pd.DataFrame:
    """Loads and validates a Kaggle-style ``review,sentiment`` CSV file."""
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; expected a header 'review,sentiment'")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, csv.Error) as error:
        raise ValueError(f"{path}: not a valid CSV file: {error}") from error
    missing = [c for c in (REVIEW_COLUMN, SENTIMENT_COLUMN) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; expected a header with "
            f"'{REVIEW_COLUMN},{SENTIMENT_COLUMN}', found: {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise ValueError(f"{path}: the file has a header but no rows")
    columns = [REVIEW_COLUMN, SENTIMENT_COLUMN]
    if GROUP_COLUMN in frame.columns:
        columns.append(GROUP_COLUMN)
    frame = frame[columns].copy()
    # Row numbers in messages count data rows from 1, the header excluded.
    row_numbers = pd.Series(range(1, len(frame) + 1), index=frame.index)
    _check_reviews(frame, row_numbers, f"{path}")
    frame[SENTIMENT_COLUMN] = frame[SENTIMENT_COLUMN].str.strip().str.lower()
    _check_labels(frame, row_numbers, f"{path}")
    if GROUP_COLUMN in frame.columns:
        empty_group = frame[GROUP_COLUMN].str.strip() == ""
        _raise_for_rows(empty_group, row_numbers, f"{path}", f"empty {GROUP_COLUMN}")
    return _finish(frame)


def load_aclimdb(root: str | Path, splits: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """Loads the ``aclImdb/{train,test}/{pos,neg}/*.txt`` layout.

    Args:
        root: the ``aclImdb`` folder (the one that holds ``train/`` and ``test/``).
        splits: sub-folders to read, a subset of ``("train", "test")``.
    """
    root = Path(root)
    unknown = [s for s in splits if s not in ACLIMDB_SPLITS]
    if unknown or not splits:
        raise ValueError(f"aclImdb splits must be some of {ACLIMDB_SPLITS}, got {splits}")
    records = []
    for split in splits:
        for folder_name, sentiment in ACLIMDB_CLASS_FOLDERS.items():
            folder = root / split / folder_name
            if not folder.is_dir():
                raise ValueError(
                    f"{root}: missing folder {split}/{folder_name}; expected the aclImdb layout "
                    "{train,test}/{pos,neg}/<id>_<rating>.txt"
                )
            movie_ids = _read_aclimdb_urls(root / split / f"urls_{folder_name}.txt")
            for file in sorted(folder.iterdir()):
                match = ACLIMDB_FILE_PATTERN.match(file.name)
                if not match:
                    raise ValueError(f"{file}: not named <id>_<rating>.txt as aclImdb files are")
                review = _read_text(file)
                if not review.strip():
                    raise ValueError(f"{file}: empty review")
                record = {REVIEW_COLUMN: review, SENTIMENT_COLUMN: sentiment}
                if movie_ids is not None:
                    review_id = int(match.group(1))
                    if review_id >= len(movie_ids):
                        raise ValueError(
                            f"{file}: review id {review_id} has no line in "
                            f"{split}/urls_{folder_name}.txt ({len(movie_ids)} lines)"
                        )
                    record[GROUP_COLUMN] = movie_ids[review_id]
                records.append(record)
    if not records:
        raise ValueError(f"{root}: no review files found under {', '.join(splits)}")
    frame = pd.DataFrame.from_records(records)
    if GROUP_COLUMN in frame.columns and frame[GROUP_COLUMN].isna().any():
        # Some class folders had a urls file and some did not: a group id for only part of the
        # rows would make a grouped split meaningless.
        frame = frame.drop(columns=GROUP_COLUMN)
    return _finish(frame)


def find_duplicates(frame: pd.DataFrame) -> DuplicateReport:
    """Counts repeated review texts and texts that carry both labels."""
    duplicate_rows = int(frame[REVIEW_COLUMN].duplicated().sum())
    labels_per_text = frame.groupby(REVIEW_COLUMN)[LABEL_COLUMN].nunique()
    return DuplicateReport(duplicate_rows, int((labels_per_text > 1).sum()))


def drop_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Keeps the first row of each review text and drops texts that carry both labels.

    A text with conflicting labels cannot be learned either way, and a text repeated across a
    split would leak validation rows into training.
    """
    labels_per_text = frame.groupby(REVIEW_COLUMN)[LABEL_COLUMN].transform("nunique")
    kept = frame[labels_per_text == 1].drop_duplicates(subset=REVIEW_COLUMN, keep="first")
    return kept.reset_index(drop=True)


def split_train_validation(
    frame: pd.DataFrame, validation_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Shuffled, stratified, seeded train/validation split, grouped by movie when known.

    With a ``movie_id`` column every movie's reviews land on one side, so that names and phrases
    shared by reviews of one movie cannot inflate the validation score. The grouped split
    uses ``StratifiedGroupKFold`` with ``round(1 / validation_fraction)`` folds and takes the
    first fold as validation.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    counts = frame[LABEL_COLUMN].value_counts()
    if len(counts) < len(LABELS) or counts.min() < 2:
        raise ValueError(
            "need at least 2 reviews of each class to split, got "
            + ", ".join(f"{LABELS[k]}: {counts.get(k, 0)}" for k in range(len(LABELS)))
        )
    labels = frame[LABEL_COLUMN].to_numpy()
    if GROUP_COLUMN in frame.columns and frame[GROUP_COLUMN].nunique() >= 2 * round(
        1 / validation_fraction
    ):
        folds = StratifiedGroupKFold(
            n_splits=round(1 / validation_fraction), shuffle=True, random_state=seed
        )
        train_index, validation_index = next(
            folds.split(frame, labels, groups=frame[GROUP_COLUMN].to_numpy())
        )
        grouped_by = GROUP_COLUMN
    else:
        train_index, validation_index = train_test_split(
            range(len(frame)), test_size=validation_fraction, stratify=labels, random_state=seed
        )
        grouped_by = None
    # Shuffle both sides: StratifiedGroupKFold returns sorted indices and the data may be ordered.
    rng = pd.Series(range(len(frame))).sample(frac=1.0, random_state=seed).to_numpy()
    order = {index: position for position, index in enumerate(rng)}
    train_index = sorted(train_index, key=order.__getitem__)
    validation_index = sorted(validation_index, key=order.__getitem__)
    return Split(
        train=frame.iloc[train_index].reset_index(drop=True),
        validation=frame.iloc[validation_index].reset_index(drop=True),
        grouped_by=grouped_by,
    )


def _read_zip_member(path: Path) -> bytes:
    """The one file in a zip archive, as pandas reads a zipped CSV."""
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            names = ", ".join(info.filename for info in members) or "none"
            raise zipfile.BadZipFile(f"expected one file in the zip archive, found: {names}")
        return archive.read(members[0])


# Streams by suffix (any case), as pandas' compression="infer" tells them; any other file is
# read as it is.
_STREAM_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _read_bytes(path: Path) -> bytes:
    """The content of a file, decompressed as its suffix says."""
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _read_zip_member(path)
    if suffix in _STREAM_OPENERS:
        with _STREAM_OPENERS[suffix](path, "rb") as stream:
            return stream.read()
    return path.read_bytes()


def _read_text(path: Path) -> str:
    """Reads a (possibly compressed) file as UTF-8, naming the line of an undecodable byte."""
    try:
        data = _read_bytes(path)
    # EOFError: a truncated gzip, bz2 or xz stream.
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: cannot read the file: {error}") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); re-encode the file as UTF-8"
        ) from error


def _read_aclimdb_urls(path: Path) -> list[str] | None:
    """Maps aclImdb review ids (line numbers) to IMDb title ids, or None without the file."""
    if not path.exists():
        return None
    movie_ids = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        match = IMDB_TITLE_PATTERN.search(line)
        if not match:
            raise ValueError(f"{path}: line {number} holds no IMDb title URL: {line[:80]!r}")
        movie_ids.append(match.group(1))
    return movie_ids


def _check_reviews(frame: pd.DataFrame, row_numbers: pd.Series, where: str) -> None:
    empty = frame[REVIEW_COLUMN].str.strip() == ""
    _raise_for_rows(empty, row_numbers, where, "empty review")


def _check_labels(frame: pd.DataFrame, row_numbers: pd.Series, where: str) -> None:
    unknown = ~frame[SENTIMENT_COLUMN].isin(LABELS)
    if unknown.any():
        examples = ", ".join(
            f"row {row_numbers[i]}: {frame.at[i, SENTIMENT_COLUMN]!r}"
            for i in frame.index[unknown][:MAX_ROWS_IN_ERROR]
        )
        raise ValueError(
            f"{where}: {int(unknown.sum())} row(s) with an unknown {SENTIMENT_COLUMN} "
            f"(expected one of {', '.join(LABELS)}): {examples}"
        )


def _raise_for_rows(mask: pd.Series, row_numbers: pd.Series, where: str, problem: str) -> None:
    if mask.any():
        rows = ", ".join(str(row_numbers[i]) for i in mask[mask].index[:MAX_ROWS_IN_ERROR])
        more = int(mask.sum()) - MAX_ROWS_IN_ERROR
        suffix = f" and {more} more" if more > 0 else ""
        raise ValueError(f"{where}: {problem} in row(s) {rows}{suffix}")


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame[LABEL_COLUMN] = frame[SENTIMENT_COLUMN].map(LABELS.index).astype("int64")
    report = find_duplicates(frame)
    if report.duplicate_rows:
        logger.warning("Data has %s", report)
    return frame
