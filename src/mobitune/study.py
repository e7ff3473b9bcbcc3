"""The Optuna side of one sweep trial, seen from the training job.

mobitune's sweeper (sweeper.py) asks Optuna for a trial, then launches a training job
with `study.trial_number`, `study.name` and `study.storage` among its overrides. The job
uses this module to reach its trial through the shared storage: it records its MLflow run
id on the trial, reports the objective after every epoch, and stops early when the
study's pruner says so. Only the sweeper tells Optuna a trial's final state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mobitune.errors import ConfigError, MobituneError
from mobitune.settings import EPOCH_METRICS, as_list, positive_int

if TYPE_CHECKING:  # pragma: no cover
    import optuna

log = logging.getLogger(__name__)

PRUNERS = ("none", "median", "percentile", "hyperband", "successive_halving")
USER_ATTR_RUN_ID = "mlflow_run_id"
TAG_STUDY = "optuna.study"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_PRUNED = "mobitune.pruned"
TAG_PRUNED_AT_EPOCH = "mobitune.pruned_at_epoch"  # 0-based: the last epoch it trained
SQLITE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class PrunedTrialResult:
    """What a pruned training job returns to the sweeper instead of a plain objective."""

    value: float | None
    epoch: int


def build_pruner(pruner_cfg: Any) -> optuna.pruners.BasePruner:
    """The Optuna pruner named by `study.pruner.name`, with its options."""
    import optuna

    name = str(pruner_cfg.get("name", "none")).lower()
    startup = int(pruner_cfg.get("n_startup_trials", 2))
    warmup = int(pruner_cfg.get("n_warmup_steps", 1))
    min_resource = pruner_cfg.get("min_resource", 1)
    reduction_factor = int(pruner_cfg.get("reduction_factor", 3))
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(
            float(pruner_cfg.get("percentile", 25.0)),
            n_startup_trials=startup,
            n_warmup_steps=warmup,
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=min_resource,
            max_resource=pruner_cfg.get("max_resource", "auto"),
            reduction_factor=reduction_factor,
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=reduction_factor
        )
    raise ConfigError("study.pruner.name", name, f"one of {list(PRUNERS)}")


def validate_pruning(study_cfg: Any, objective_cfg: Any) -> None:
    """Pruning needs one objective that is reported every epoch."""
    name = str(study_cfg.pruner.get("name", "none")).lower()
    if name not in PRUNERS:
        raise ConfigError("study.pruner.name", name, f"one of {list(PRUNERS)}")
    if name == "none":
        return
    metrics = as_list(objective_cfg.metric)
    if len(metrics) > 1:
        raise ConfigError(
            "study.pruner.name",
            name,
            "`none` for a multi-objective sweep",
            "Optuna cannot prune trials that optimise several objectives.",
        )
    if str(metrics[0]) not in EPOCH_METRICS:
        raise ConfigError(
            "study.pruner.name",
            name,
            f"`none` when objective.metric is {metrics[0]!r}",
            f"Pruning compares a metric reported every epoch: one of {list(EPOCH_METRICS)}.",
        )


def heartbeat_settings(study_cfg: Any) -> tuple[int, int]:
    """`study.heartbeat_interval` and `study.grace_period` in whole seconds, checked."""
    interval = positive_int(
        "study.heartbeat_interval",
        study_cfg.get("heartbeat_interval", 10),
        "a positive whole number of seconds",
    )
    grace = positive_int(
        "study.grace_period",
        study_cfg.get("grace_period", 60),
        "a positive whole number of seconds",
    )
    if grace <= interval:
        raise ConfigError(
            "study.grace_period",
            grace,
            f"more seconds than study.heartbeat_interval ({interval})",
            "A trial is judged dead when its heartbeat has been silent that long.",
        )
    return interval, grace


def open_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Any = None,
) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for `url`, created safely when several processes start at once.

    SQLite gets a long busy timeout so that parallel trials wait for the lock instead of
    failing with "database is locked".
    """
    import optuna

    from mobitune.tracking import store_lock

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_SECONDS}
    try:
        with store_lock(url):  # schema creation and migration, once
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback,
            )
    except Exception as error:  # SQLAlchemy / driver errors: say which setting is wrong
        raise MobituneError(
            f"Cannot open the Optuna storage `hydra.sweeper.storage={url}`: {error}. Use an "
            "SQLAlchemy URL such as sqlite:////abs/path/optuna.db or "
            "postgresql://user:password@host/database."
        ) from error


class TrialLink:
    """The job's handle on its Optuna trial (None outside a sweep: see `from_config`).

    Constructed with the link's values; `open()` connects to the storage.
    """

    def __init__(
        self,
        study_name: str,
        storage_url: str,
        trial_number: int,
        pruner_cfg: Any = None,
        objective_metric: str = "val_accuracy",
    ) -> None:
        self.study_name = study_name
        self.storage_url = storage_url
        self.trial_number = trial_number
        self.pruner_cfg = pruner_cfg
        self.objective_metric = objective_metric
        self.pruned_at_epoch: int | None = None
        self._study = None
        self._trial = None

    @classmethod
    def from_config(cls, cfg: Any) -> TrialLink | None:
        """The link described by `cfg.study`, or None when the job is not a sweep trial."""
        study_cfg = cfg.get("study")
        if study_cfg is None or study_cfg.get("trial_number") is None:
            return None
        if not study_cfg.get("name") or not study_cfg.get("storage"):
            raise ConfigError(
                "study.name / study.storage",
                f"{study_cfg.get('name')!r} / {study_cfg.get('storage')!r}",
                "both set when study.trial_number is set",
                "They are set by `mobitune sweep`; reset study.trial_number=null for a plain run.",
            )
        validate_pruning(study_cfg, cfg.objective)
        metrics = as_list(cfg.objective.metric)
        return cls(
            study_name=str(study_cfg.name),
            storage_url=str(study_cfg.storage),
            trial_number=int(study_cfg.trial_number),
            pruner_cfg=study_cfg.get("pruner"),
            objective_metric=str(metrics[0]),
        )

    def open(self) -> TrialLink:
        """Load the study (with its pruner) and find this job's trial."""
        import optuna

        storage = open_storage(self.storage_url)
        pruner = build_pruner(self.pruner_cfg) if self.pruner_cfg is not None else None
        self._study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            self._study._study_id, self.trial_number
        )
        self._trial = optuna.trial.Trial(self._study, trial_id)
        return self

    @property
    def pruning_enabled(self) -> bool:
        return (
            self.pruner_cfg is not None
            and str(self.pruner_cfg.get("name", "none")).lower() != "none"
        )

    def attach_run(self, run_id: str) -> None:
        """Store the MLflow run id as a user attribute of the trial (once it is open)."""
        if self._trial is None:
            return
        self._trial.set_user_attr(USER_ATTR_RUN_ID, run_id)

    def report(self, value: float, epoch: int) -> bool:
        """Report an epoch's objective value; True when the trial should stop (pruned)."""
        if not self.pruning_enabled:
            return False
        self._trial.report(float(value), step=int(epoch))
        if self._trial.should_prune():
            self.pruned_at_epoch = int(epoch)
            return True
        return False

    def pruning_callback(self):
        """A Keras callback reporting the objective each epoch and stopping pruned trials."""
        import keras

        link = self

        class OptunaPruningCallback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                value = (logs or {}).get(link.objective_metric)
                if value is None:
                    return
                if link.report(float(value), epoch):
                    log.info(
                        "Trial %d pruned after epoch %d (%s=%.4f)",
                        link.trial_number,
                        epoch,
                        link.objective_metric,
                        float(value),
                    )
                    self.model.stop_training = True

        return OptunaPruningCallback()


@contextlib.contextmanager
def parent_watchdog(on_orphaned, interval: float = 2.0) -> Iterator[None]:
    """Call `on_orphaned()` if this process's parent dies (e.g. a sweeper killed with -9).

    A training job launched by the joblib launcher runs in a worker process; when the
    sweeper dies, the worker must not go on training a trial nobody will record.
    """
    parent = os.getppid()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent:
                on_orphaned()
                return

    thread = threading.Thread(target=watch, name="mobitune-parent-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
