"""`mobitune train`: one training run (or a Hydra multirun) from the config tree."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from mobitune.errors import MobituneError
from mobitune.paths import config_dir, register_resolvers

register_resolvers()


@hydra.main(config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> float | tuple[float, ...]:
    """Train once from `cfg` and return the objective the sweeper optimises."""
    from mobitune.train import train

    return run_job(cfg, train)


def run_job(cfg: DictConfig, train_function) -> float | tuple[float, ...]:
    """Run one job; in a single run a MobituneError exits 2 with its message, no traceback.

    In a multirun the error propagates, so the sweeper records the job as failed.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        metrics = train_function(cfg)
    except MobituneError as error:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"mobitune: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    return metrics["objective"]


def run_hydra(command: str, arguments: Sequence[str]) -> int:
    """Hand `arguments` to the Hydra app as if it were called `mobitune <command>`."""
    saved = sys.argv
    sys.argv = [f"mobitune {command}", *arguments]
    try:
        if command == "sweep":
            from mobitune.cli.sweep import sweep_arguments

            sys.argv = [f"mobitune {command}", *sweep_arguments(arguments)]
        hydra_main()
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    finally:
        sys.argv = saved
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`train` is parsed by Hydra; it is listed here for `mobitune --help`."""
    parser = subparsers.add_parser(
        "train",
        help="train once from the Hydra config: mobitune train [OVERRIDES...] (--help for Hydra's)",
        add_help=False,
    )
    parser.set_defaults(handler=lambda parsed: run_hydra("train", []))


__all__ = ["hydra_main", "run_hydra", "run_job", "MobituneError"]
