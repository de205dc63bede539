"""Loading and validating review data, duplicates, and the train/validation split."""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import lzma
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import PROJECT_ROOT
from training import data


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


GOOD_CSV = (
    "review,sentiment,rating\n"
    '"A fine film, truly.",positive,9\n'
    "Dreadful.<br />Just dreadful.,negative,1\n"
    "Loved it,Positive ,8\n"
)


class TestCsv:
    def test_reads_the_kaggle_layout_and_ignores_extra_columns(self, tmp_path):
        frame = data.load_reviews(write(tmp_path / "reviews.csv", GOOD_CSV))
        assert list(frame.columns) == ["review", "sentiment", "label"]
        assert frame["sentiment"].tolist() == ["positive", "negative", "positive"]
        assert frame["label"].tolist() == [1, 0, 1]
        assert frame.loc[0, "review"] == "A fine film, truly."

    def test_reads_gzip_and_keeps_movie_id(self, tmp_path):
        text = "review,sentiment,movie_id\ngood,positive,tt1\nbad,negative,tt2\n"
        frame = data.load_reviews(write(tmp_path / "reviews.csv.gz", text))
        assert frame["movie_id"].tolist() == ["tt1", "tt2"]

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"", "the file is empty"),
            (b"review,sentiment\n", "header but no rows"),
            (b"text,label\nhi,positive\n", "missing column(s) review, sentiment"),
            (b"review,sentiment\nok,positive\nmeh,neutral\n", "row 2: 'neutral'"),
            (b"review,sentiment\nok,positive\n  ,negative\n", "empty review in row(s) 2"),
            (
                b"review,sentiment\nok,positive\nbad \xff byte,negative\n",
                "line 3 is not valid UTF-8",
            ),
            (b'review,sentiment\n"unterminated,positive\n', "not a valid CSV file"),
        ],
    )
    def test_bad_files_raise_value_error_naming_file_and_row(self, tmp_path, content, expected):
        path = write(tmp_path / "bad.csv", content)
        with pytest.raises(ValueError) as error:
            data.load_reviews(path)
        assert str(path) in str(error.value)
        assert expected in str(error.value)

    def test_missing_path_is_a_value_error(self, tmp_path):
        with pytest.raises(ValueError, match="no such file"):
            data.load_reviews(tmp_path / "nope.csv")

    def test_many_bad_rows_are_summarised(self, tmp_path):
        rows = "".join(" ,positive\n" for _ in range(8))
        with pytest.raises(ValueError, match=r"row\(s\) 1, 2, 3, 4, 5 and 3 more"):
            data.load_reviews(write(tmp_path / "r.csv", "review,sentiment\n" + rows))


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


# How each compression pandas infers from a suffix (read_csv's "infer") is written.
COMPRESSIONS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zip": lambda content: zipped(("reviews.csv", content)),
}


def pandas_names(source: str) -> set[str]:
    """Every dotted pandas name a module uses (``pd.read_csv`` -> ``pandas.read_csv``)."""
    tree = ast.parse(source)
    aliases = {"pandas": "pandas"}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pandas":
                    aliases[alias.asname or alias.name] = alias.name
                    names.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pandas":
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute):
            parts = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                names.add(".".join([aliases[value.id], *reversed(parts)]))
    # pd.io.common.get_handle, not also pd.io and pd.io.common.
    return {name for name in names if not any(other.startswith(f"{name}.") for other in names)}


class TestCompressedFiles:
    @pytest.mark.parametrize("suffix", [*COMPRESSIONS, ".GZ"])
    def test_reads_what_pandas_infers_from_the_suffix(self, tmp_path, suffix):
        content = "\ufeffreview,sentiment\nCaf\u00e9 society,positive\n".encode()
        path = tmp_path / f"reviews.csv{suffix}"
        path.write_bytes(COMPRESSIONS[suffix.lower()](content))
        frame = data.load_reviews(path)
        assert frame["review"].tolist() == ["Caf\u00e9 society"]  # the BOM is not in a name

    def test_an_undecodable_byte_in_a_compressed_file_names_its_line(self, tmp_path):
        path = tmp_path / "reviews.csv.xz"
        path.write_bytes(lzma.compress(b"review,sentiment\nok,positive\nbad \xff,negative\n"))
        with pytest.raises(ValueError, match=r"reviews\.csv\.xz: line 3 is not valid UTF-8"):
            data.load_reviews(path)

    @pytest.mark.parametrize(
        ("name", "content"),
        [
            ("truncated.csv.gz", gzip.compress(GOOD_CSV.encode())[:-12]),
            ("damaged.csv.zip", b"PK\x03\x04 not really a zip"),
            ("two.csv.zip", zipped(("a.csv", b"review,sentiment\n"), ("b.csv", b"x"))),
            ("empty.csv.zip", zipped()),
        ],
    )
    def test_a_damaged_or_ambiguous_archive_is_a_value_error_naming_it(
        self, tmp_path, name, content
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match="cannot read the file") as error:
            data.load_reviews(path)
        assert str(path) in str(error.value)

    def test_the_loaders_use_only_public_pandas_api(self):
        """pandas' private modules (``pandas.io.common``, ``pandas.core``, ``pandas._libs``...)
        change without notice between releases."""
        private = []
        for module in sorted((PROJECT_ROOT / "training").glob("*.py")):
            for name in pandas_names(module.read_text()):
                parts = name.split(".")
                if parts[1:2] in (["io"], ["core"], ["compat"]) or any(
                    part.startswith("_") for part in parts
                ):
                    private.append(f"{module.name}: {name}")
        assert private == []


def make_aclimdb(root: Path, with_urls: bool = True) -> Path:
    for split in ("train", "test"):
        for folder, reviews in (("pos", ["Great!", "Superb."]), ("neg", ["Awful.", "Bad."])):
            (root / split / folder).mkdir(parents=True)
            for review_id, review in enumerate(reviews):
                (root / split / folder / f"{review_id}_7.txt").write_text(review)
            if with_urls:
                urls = "".join(f"http://www.imdb.com/title/tt00{i}/usercomments\n" for i in (1, 2))
                (root / split / f"urls_{folder}.txt").write_text(urls)
    return root


class TestAclImdb:
    def test_reads_train_split_with_movie_ids(self, tmp_path):
        frame = data.load_reviews(make_aclimdb(tmp_path / "aclImdb"))
        assert len(frame) == 4
        assert sorted(frame["sentiment"]) == ["negative", "negative", "positive", "positive"]
        assert set(frame["movie_id"]) == {"tt001", "tt002"}

    def test_reads_both_splits_without_urls(self, tmp_path):
        root = make_aclimdb(tmp_path / "aclImdb", with_urls=False)
        frame = data.load_aclimdb(root, splits=("train", "test"))
        assert len(frame) == 8
        assert "movie_id" not in frame.columns

    def test_missing_class_folder(self, tmp_path):
        root = make_aclimdb(tmp_path / "aclImdb")
        (root / "train" / "neg" / "0_7.txt").unlink()
        (root / "train" / "neg" / "1_7.txt").unlink()
        (root / "train" / "neg").rmdir()
        with pytest.raises(ValueError, match="missing folder train/neg"):
            data.load_reviews(root)

    def test_empty_and_misnamed_files(self, tmp_path):
        root = make_aclimdb(tmp_path / "aclImdb")
        (root / "train" / "pos" / "0_7.txt").write_text("   ")
        with pytest.raises(ValueError, match=r"0_7.txt: empty review"):
            data.load_reviews(root)
        (root / "train" / "pos" / "0_7.txt").write_text("fine")
        (root / "train" / "pos" / "notes.txt").write_text("x")
        with pytest.raises(ValueError, match=r"notes\.txt: not named"):
            data.load_reviews(root)


def frame_of(rows: list[tuple[str, int, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["review", "label", "movie_id"])
    frame["sentiment"] = frame["label"].map({0: "negative", 1: "positive"})
    return frame.dropna(axis=1)


class TestDuplicates:
    def test_reports_and_drops_duplicates_and_conflicts(self):
        frame = frame_of(
            [("a", 1, None), ("a", 1, None), ("b", 0, None), ("b", 1, None), ("c", 0, None)]
        )
        report = data.find_duplicates(frame)
        assert (report.duplicate_rows, report.conflicting_texts) == (2, 1)
        kept = data.drop_duplicates(frame)
        assert kept["review"].tolist() == ["a", "c"]


class TestSplit:
    def test_stratified_seeded_and_sized(self):
        frame = frame_of([(f"r{i}", i % 2, None) for i in range(100)])
        first = data.split_train_validation(frame, 0.2, seed=3)
        again = data.split_train_validation(frame, 0.2, seed=3)
        other = data.split_train_validation(frame, 0.2, seed=4)
        assert len(first.validation) == 20 and len(first.train) == 80
        assert first.validation["label"].sum() == 10
        assert first.grouped_by is None
        assert first.validation["review"].tolist() == again.validation["review"].tolist()
        assert first.validation["review"].tolist() != other.validation["review"].tolist()

    def test_grouped_by_movie_keeps_each_movie_on_one_side(self):
        rows = [(f"r{i}", i % 2, f"tt{i // 4}") for i in range(400)]
        split = data.split_train_validation(frame_of(rows), 0.2, seed=0)
        assert split.grouped_by == "movie_id"
        assert not set(split.train["movie_id"]) & set(split.validation["movie_id"])
        assert 0.15 < len(split.validation) / 400 < 0.25
        # Shuffled: not in the input's order.
        assert split.train["review"].tolist() != sorted(
            split.train["review"], key=lambda r: int(r[1:])
        )

    def test_refuses_a_single_class(self):
        with pytest.raises(ValueError, match="at least 2 reviews of each class"):
            data.split_train_validation(frame_of([(f"r{i}", 1, None) for i in range(10)]))
