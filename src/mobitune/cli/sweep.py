"""`mobitune sweep NAME [HYDRA OVERRIDES...]`: launch a sweep defined in sweeps/.

It is `mobitune train -m sweeps=NAME [OVERRIDES...]`: the sweep file selects the Optuna
sweeper, its search space and the joblib launcher; any override narrows or extends it,
e.g. `hydra.sweeper.n_trials=6 hydra.launcher.n_jobs=2 'model.alpha=choice(0.25,0.5)'`
(a sweep override of a job key joins or replaces that key's search space; a plain value
fixes it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mobitune.errors import MobituneError, format_choices
from mobitune.paths import sweeps_dir


def available_sweeps() -> list[str]:
    """Names of the sweep definitions in sweeps/."""
    return sorted(path.stem for path in sweeps_dir().glob("*.yaml"))


def usage() -> str:
    names = "\n".join(f"  {name}" for name in available_sweeps())
    return (
        "usage: mobitune sweep NAME [HYDRA OVERRIDES...]\n\n"
        "Launch an Optuna sweep defined in sweeps/NAME.yaml (equivalent to\n"
        "`mobitune train -m sweeps=NAME [OVERRIDES...]`). Running the same command again\n"
        "resumes the study until it holds hydra.sweeper.n_trials finished trials.\n\n"
        f"sweeps ({sweeps_dir()}):\n{names}\n\n"
        "common overrides: data.root=... tracking.uri=... hydra.sweeper.n_trials=N\n"
        "  hydra.sweeper.storage=URL hydra.launcher.n_jobs=N hydra.sweep.dir=DIR\n"
        "  study.pruner.name=none|median|percentile|hyperband|successive_halving\n"
        "  hydra/sweeper/sampler=tpe|random|cmaes|gp|grid|nsgaii|qmc"
    )


def sweep_arguments(arguments: Sequence[str]) -> list[str]:
    """Hydra arguments for `mobitune sweep NAME ...`: select the sweep definition."""
    if not arguments or arguments[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0)
    name, *rest = arguments
    if name not in available_sweeps():
        raise MobituneError(
            f"No sweep named {name!r}. Sweeps in {sweeps_dir()}: "
            f"{format_choices(available_sweeps())}. Usage: mobitune sweep NAME [OVERRIDES...]"
        )
    return ["--multirun", f"sweeps={name}", *rest]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`sweep` is parsed by Hydra; it is listed here for `mobitune --help`."""
    subparsers.add_parser(
        "sweep",
        help="launch an Optuna sweep from sweeps/: mobitune sweep NAME [OVERRIDES...]",
        add_help=False,
    )
