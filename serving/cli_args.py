"""Small helpers shared by the command lines (training, the local server); no dependencies."""

from __future__ import annotations

import argparse
import os


def bool_flag(text: str) -> bool:
    """An argparse type for true/false flags, spelled as TF Serving accepts them."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def usable_cpus() -> int:
    """CPUs this process may run on (a container's CPU set), for thread-count defaults."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
