"""The one rule for version folders: which children of a model base path are versions.

TF Serving treats a child directory of ``--model_base_path`` as a version when its name parses
as an int64 with ``absl::SimpleAtoi``: an optional sign, then decimal digits. Negative numbers
parse too, but no version is negative, so they are never served; names such as ``01`` and ``1``
are the same version (TF Serving logs the duplicate and serves one of them).

Everything in this project that asks "which versions are there" or "which is the latest"
(the export, the local server, the Makefile, the demo and deploy scripts) asks this module.
It has no dependencies, so plain ``python3`` runs it before any environment exists::

    python -m serving versions models/imdb            # every version, ascending
    python -m serving versions models/imdb --latest   # the highest, or exit code 1 if none
"""

from __future__ import annotations

from pathlib import Path

# Version numbers are int64 in TF Serving (ModelSpec.version is an Int64Value).
MAX_VERSION = 2**63 - 1


def version_number(name: str) -> int | None:
    """The version a folder name stands for, as TF Serving parses it, or None if it is not one.

    ``"3"``, ``"+3"`` and ``"003"`` are version 3; ``"-3"``, ``"3a"``, ``".3"`` and numbers
    beyond int64 are not versions.
    """
    digits = name[1:] if name[:1] in "+-" else name
    if not digits.isascii() or not digits.isdigit():
        return None
    value = int(name, 10)
    return value if 0 <= value <= MAX_VERSION else None


def version_folders(base_path: str | Path) -> dict[int, Path]:
    """Version number -> folder for every version folder under ``base_path``.

    Hidden folders (a staging ``.tmp-…`` export) and files are not versions. Of two names for
    one number (``1`` and ``01``) the first in sorted order is kept.

    Raises:
        OSError: ``base_path`` cannot be listed (absent, not a folder, no permission).
    """
    folders: dict[int, Path] = {}
    for child in sorted(Path(base_path).iterdir()):
        number = version_number(child.name)
        if number is not None and number not in folders and child.is_dir():
            folders[number] = child
    return folders


def list_versions(base_path: str | Path) -> list[int]:
    """The version numbers under ``base_path``, ascending; none when it does not exist."""
    try:
        return sorted(version_folders(base_path))
    except FileNotFoundError:
        return []


def latest_version(base_path: str | Path) -> int | None:
    """The highest version under ``base_path`` (what TF Serving's default policy serves)."""
    versions = list_versions(base_path)
    return versions[-1] if versions else None
