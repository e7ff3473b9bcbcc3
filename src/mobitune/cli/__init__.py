"""The `mobitune` command line: one console script, one subcommand per task.

`mobitune train [HYDRA OVERRIDES...]` hands everything after `train` to Hydra, so its
override grammar and flags (`--cfg job`, `--help`, `-m`) work unchanged. Each other
subcommand lives in a module of this package exposing `add_parser(subparsers)`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Keep TensorFlow's C++ start-up chatter out of the user's terminal unless asked for.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HYDRA_SUBCOMMANDS = ("train", "sweep")


def _subcommand_modules():
    from mobitune.cli import cache as cache_command
    from mobitune.cli import data as data_command
    from mobitune.cli import runs as runs_command
    from mobitune.cli import sweep as sweep_command
    from mobitune.cli import train as train_command

    return [train_command, sweep_command, data_command, runs_command, cache_command]


def build_parser() -> argparse.ArgumentParser:
    from mobitune import __version__

    parser = argparse.ArgumentParser(
        prog="mobitune",
        description="Fine-tune Keras MobileNet on your own images: Hydra configs, Optuna "
        "sweeps, every run tracked in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"mobitune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommand_modules():
        module.add_parser(subparsers)
    return parser


def report_error(error: BaseException) -> int:
    """Print a MobituneError as one paragraph on stderr; return its exit code."""
    code = getattr(error, "exit_code", 2)
    print(f"mobitune: error: {error}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mobitune` console script."""
    from mobitune.errors import MobituneError

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in HYDRA_SUBCOMMANDS:
        # Hydra parses its own arguments (overrides, --cfg, -m, --help).
        from mobitune.cli import train as train_command

        try:
            return train_command.run_hydra(arguments[0], arguments[1:])
        except MobituneError as error:
            return report_error(error)
    parser = build_parser()
    parsed = parser.parse_args(arguments)
    try:
        return int(parsed.handler(parsed) or 0)
    except MobituneError as error:
        return report_error(error)
    except KeyboardInterrupt:
        print("mobitune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
