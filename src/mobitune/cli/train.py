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

    In a trial of mobitune's sweeper the error propagates, so the sweeper records the
    trial as failed and the sweep goes on.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mobitune.study import PrunedTrialResult

    try:
        metrics = train_function(cfg)
    except MobituneError as error:
        in_sweep = cfg.get("study", {}).get("trial_number") is not None
        if in_sweep and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # mobitune's sweeper records the trial as failed and goes on
        print(f"mobitune: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    if metrics.get("pruned_at_epoch") is not None:
        return PrunedTrialResult(metrics["objective"], int(metrics["pruned_at_epoch"]))
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
