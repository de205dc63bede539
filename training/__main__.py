"""Command line: ``python -m training <command> ...``.

Commands:
    explore     six data metrics with plots, and the recommended model family
    train       train on labelled reviews and export a new model version
    tune        grid search over vectoriser and model settings (resumable)
    bench       training benchmark: both model families vs a scikit-learn baseline
    bench-graph serving-graph benchmark: throughput and latency of the exported graphs
    demo-data   write the built-in demo set of short reviews as a CSV
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from serving.cli_args import EXIT_FAILED, EXIT_OK, EXIT_USAGE, bool_flag, parse_args
from serving.contract import MODEL_BASE_DIR
from training.config import MODEL_FAMILIES

logger = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, evaluate and export a model version")
    train.add_argument(
        "--data",
        default="auto",
        help="Kaggle CSV (plain or .gz) or aclImdb/ folder; 'auto' searches data/, then "
        "downloads the official archive, then falls back to the demo set (default: auto)",
    )
    train.add_argument("--data-dir", type=Path, default=Path("data"), help="local data folder")
    train.add_argument(
        "--no-download", action="store_true", help="with --data auto, never use the network"
    )
    train.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    train.add_argument(
        "--model-dir",
        type=Path,
        default=Path(MODEL_BASE_DIR),
        help=f"model base path to export into (default: {MODEL_BASE_DIR})",
    )
    train.add_argument("--version", type=int, help="version number (default: highest + 1)")
    # Each TrainConfig field can be overridden on the command line (kebab-case).
    from training.config import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        is_bool = isinstance(field.default, bool)
        train.add_argument(
            "--" + field.name.replace("_", "-"),
            type=bool_flag if is_bool else type(field.default),
            default=None,
            help=f"(default: {str(field.default).lower() if is_bool else field.default})",
        )

    explore = commands.add_parser("explore", help="metrics, plots and report of a data set")
    explore.add_argument("--data", type=Path, required=True, help="labelled reviews")
    explore.add_argument(
        "--out", type=Path, default=Path("reports/explore"), help="(default: reports/explore)"
    )

    tune = commands.add_parser("tune", help="grid search on the grouped validation split")
    tune.add_argument("--data", type=Path, required=True, help="labelled reviews (CSV or aclImdb/)")
    tune.add_argument("--grid", type=Path, required=True, help="JSON: TrainConfig field -> values")
    tune.add_argument("--config", type=Path, help="JSON TrainConfig for the fields the grid omits")
    tune.add_argument(
        "--out", type=Path, help="results folder (default: reports/tune/<grid file name>)"
    )

    bench = commands.add_parser("bench", help="benchmark training against a baseline")
    bench.add_argument("--data", type=Path, required=True, help="labelled reviews")
    bench.add_argument("--config", type=Path, help="JSON TrainConfig (default: the defaults)")
    bench.add_argument("--out", type=Path, default=Path("reports"), help="(default: reports)")
    bench.add_argument(
        "--families",
        type=_families,
        default=MODEL_FAMILIES,
        help=f"comma-separated model families to train (default: {','.join(MODEL_FAMILIES)})",
    )

    graph = commands.add_parser("bench-graph", help="benchmark the exported serving graphs")
    graph.add_argument("--data", type=Path, required=True, help="labelled reviews")
    graph.add_argument("--config", type=Path, help="JSON TrainConfig (default: the defaults)")
    graph.add_argument("--out", type=Path, default=Path("reports"), help="(default: reports)")
    graph.add_argument("--rounds", type=int, default=3, help="measurement rounds (default: 3)")

    demo = commands.add_parser("demo-data", help="write the demo review set as CSV")
    demo.add_argument("--out", type=Path, default=Path("data/demo/reviews.csv"))
    return parser


def _families(text: str) -> tuple[str, ...]:
    families = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in families if name not in MODEL_FAMILIES]
    if not families or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(MODEL_FAMILIES)}, got {text!r}"
        )
    return families


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # TensorFlow's Python loggers narrate every save, restore and renamed capture at INFO.
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "explore":
            from training.data import load_reviews
            from training.explore import summary_line, write_exploration

            metrics = write_exploration(load_reviews(args.data), args.out, str(args.data))
            for warning in metrics["warnings"]:
                logger.warning(warning)
            print(f"{summary_line(metrics)}; report {args.out / 'report.md'}")
            return EXIT_OK
        if args.command == "tune":
            return _tune(args)
        if args.command == "bench":
            from training.benchmark import run_benchmark
            from training.config import TrainConfig

            config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
            run_benchmark(args.data, args.out, config, args.families)
            print((args.out / "bench-train.md").read_text(), end="")
            return EXIT_OK
        if args.command == "bench-graph":
            from training.config import TrainConfig
            from training.graph_benchmark import run_graph_benchmark

            config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
            run_graph_benchmark(args.data, args.out, config, args.rounds)
            print((args.out / "bench-graph.md").read_text(), end="")
            return EXIT_OK
        if args.command == "demo-data":
            from training.demo_data import write_demo_csv

            print(f"Wrote {write_demo_csv(args.out)}")
            return EXIT_OK
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE


def _tune(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.tune import tune

    base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    out = args.out or Path("reports") / "tune" / args.grid.stem
    result = tune(args.data, args.grid, out, base)
    best = result.results.iloc[0]
    print(
        f"{len(result.results)} trial(s); best val accuracy {best['val_accuracy']:.4f} "
        f"(ROC AUC {best['val_roc_auc']:.4f}); table {out / 'results.md'}; "
        f"config {out / 'best_config.json'} (python -m training train --config ...)"
    )
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.evaluate import summary_line
    from training.export import ExportError
    from training.sources import resolve_data
    from training.train import train_and_export

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if getattr(args, field.name) is not None
    }
    config = config.replace(**overrides)
    source = resolve_data(args.data, data_dir=args.data_dir, download=not args.no_download)
    logger.info("Training data: %s", source.describe())
    try:
        result = train_and_export(source, config, args.model_dir, version=args.version)
    except ExportError as error:
        print(f"error: export failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    demo_note = " [DEMO DATA]" if source.is_demo else ""
    print(
        f"Exported version {result.version} to {result.export_path} in {result.seconds:.0f} s "
        f"({result.epochs} epochs){demo_note}; validation: {summary_line(result.evaluation)}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
