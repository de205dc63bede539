"""What the project's command lines share: exit codes, argument parsing, flag types, defaults.

Used by ``python -m training``, ``python -m serving`` (and its smoke test) and the local server.
No dependencies beyond the standard library, so every CLI can import it before anything heavy.
"""

from __future__ import annotations

import argparse
import os

# Exit codes of every CLI: success, the work failed (bad data, a failed request), bad usage.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when argparse ends the run itself.

    argparse calls ``sys.exit`` for ``--help`` (0) and for bad usage (2, after printing the
    usage). Every CLI has a ``main(argv) -> int`` that tests call in-process, so the exit is
    turned into a return value: ``if isinstance(args, int): return args``.
    """
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK


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
