"""Hydra discovers sweepers in the `hydra_plugins` namespace: this is mobitune's.

Sweep configs keep `hydra/sweeper=optuna` (its config interface) and point its
`_target_` here. The work is done in `mobitune.sweeper`.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig


class MobituneOptunaSweeper(Sweeper):
    """The Hydra Optuna sweeper with resume, pruning, MLflow grouping and failure handling."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        from mobitune.sweeper import MobituneSweeperImpl

        sampler = instantiate(
            sampler,
            _execution_whitelist_=(
                "hydra_plugins.hydra_optuna_sweeper.*",
                "optuna.samplers.*",
            ),
        )
        self.sweeper = MobituneSweeperImpl(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            custom_search_space,
            params,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from mobitune.errors import MobituneError

        try:
            return self.sweeper.sweep(arguments)
        except MobituneError as error:
            # A bad sweep setting is one clear paragraph, not a traceback through Hydra.
            print(f"mobitune: error: {error}", file=sys.stderr)
            raise SystemExit(error.exit_code) from None
