"""mobitune's Optuna sweeper: the Hydra Optuna sweeper, extended where sweeps need it.

It keeps the Hydra Optuna sweeper's config interface (`hydra.sweeper.n_trials`,
`storage`, `study_name`, `sampler`, `direction`, `params`, `n_jobs`, `max_failure_rate`)
and reuses its search-space parsing, and adds what that plugin leaves out:

- resume: the same command continues the same study until it holds `n_trials`
  finished (COMPLETE or PRUNED) trials; trials left RUNNING by a dead process are
  failed through Optuna's heartbeat, in Optuna and in MLflow;
- each trial writes to its own folder (`trial_<number>`), never over an earlier one;
- pruning: the training job reaches its trial through the shared storage (study.py);
- MLflow grouping: one parent run per study, a child run per trial, the best trial and
  Optuna's plots on the parent, refreshed when the sweep ends;
- failures: a failed trial is FAIL in Optuna and FAILED in MLflow with its error, and the
  sweep goes on until more than `max_failure_rate * n_trials` trials failed;
- `study.enqueue_seed`: the seed preset's values run first, as a reference.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import DictConfig, OmegaConf

from mobitune import tracking
from mobitune.errors import ConfigError, MobituneError
from mobitune.settings import as_list, validate_objective
from mobitune.study import (
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    USER_ATTR_RUN_ID,
    PrunedTrialResult,
    heartbeat_settings,
    open_storage,
    validate_pruning,
)

log = logging.getLogger(__name__)

TAG_SWEEP_PARENT = "mobitune.sweep_parent"
TAG_STORAGE = "optuna.storage"
TAG_BEST_RUN = "mobitune.best_run_id"
USER_ATTR_SEED_TRIAL = "mobitune.seed_trial"
DIRECTION_OF_MODE = {"max": "maximize", "min": "minimize"}


def _quote(value: str) -> str:
    """A Hydra override value quoted so that any characters survive (URLs, ids)."""
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _redact(url: str) -> str:
    """A storage URL without its password, fit for a tag."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: keep it as it is
        return url


class HeartbeatThread:
    """Records Optuna heartbeats for the trials this sweeper is running.

    When the sweeper dies, the heartbeats stop and a later run of the same sweep fails
    those trials as stale instead of waiting for them forever.
    """

    def __init__(self, storage: Any, trial_ids: Sequence[int], interval: float) -> None:
        self.storage = storage
        self.trial_ids = list(trial_ids)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        for trial_id in self.trial_ids:
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as error:  # noqa: BLE001 - a missed beat is retried next time
                log.debug("Heartbeat for trial %s failed: %s", trial_id, error)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> HeartbeatThread:
        self._beat()
        self._thread = threading.Thread(target=self._run, name="mobitune-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)


class MobituneSweeperImpl(OptunaSweeperImpl):
    """The sweep loop; constructed by the Hydra plugin with the Optuna sweeper's options."""

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.study_cfg = config.study
        self.tracking_uri = str(config.tracking.uri)
        self.experiment = str(config.tracking.experiment)
        self.artifact_location = config.tracking.get("artifact_location")
        self.parent_run_id: str | None = None

    # ----------------------------------------------------------------------- checks
    def _directions_for_objective(self) -> list[str]:
        metrics, modes = validate_objective(self.config.objective)
        directions = [str(d).lower() for d in self._get_directions()]
        expected = [DIRECTION_OF_MODE[mode] for mode in modes]
        if directions != expected:
            raise ConfigError(
                "hydra.sweeper.direction",
                directions if len(directions) > 1 else directions[0],
                f"{expected if len(expected) > 1 else expected[0]} to match objective.metric="
                f"{metrics if len(metrics) > 1 else metrics[0]} with objective.mode="
                f"{modes if len(modes) > 1 else modes[0]}",
            )
        return directions

    def _check_sampler_dependencies(self) -> None:
        """Samplers whose libraries are optional: say which install makes them work."""
        import importlib.util

        name = type(self.sampler).__name__
        if name == "GPSampler" and importlib.util.find_spec("torch") is None:
            raise ConfigError(
                "hydra/sweeper/sampler",
                "gp",
                "a sampler whose libraries are installed",
                "Optuna's GPSampler runs on PyTorch: `pip install 'mobitune[gp]'` (a CPU build "
                "of torch is enough), or choose tpe, random, cmaes, grid, nsgaii or qmc.",
            )

    def _storage_url(self) -> str:
        if not self.storage:
            raise ConfigError(
                "hydra.sweeper.storage",
                self.storage,
                "an Optuna storage URL (e.g. sqlite:///mlruns/optuna.db)",
                "mobitune sweeps persist every study so they can resume and prune.",
            )
        return str(self.storage)

    # ------------------------------------------------------------------ MLflow
    def _client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def _find_or_create_parent_run(self, study_name: str, storage_url: str) -> str:
        experiment_id = tracking.prepare_experiment(
            self.tracking_uri, self.experiment, self.artifact_location
        )
        client = self._client()
        with tracking.store_lock(self.tracking_uri):
            found = client.search_runs(
                [experiment_id],
                filter_string=(
                    f"tags.`{TAG_SWEEP_PARENT}` = 'true' and tags.`{TAG_STUDY}` = '{study_name}'"
                    f" and tags.`{TAG_STORAGE}` = '{_redact(storage_url)}'"
                ),
                max_results=1,
            )
            if found:
                run_id = found[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                log.info("Resuming sweep: MLflow parent run %s", run_id)
                return run_id
            tags = tracking.source_tags(Path(str(self.config.paths.root_dir)))
            tags.update(
                {TAG_SWEEP_PARENT: "true", TAG_STUDY: study_name, TAG_STORAGE: _redact(storage_url)}
            )
            run = client.create_run(experiment_id, run_name=f"sweep-{study_name}", tags=tags)
        run_id = run.info.run_id
        search_space = {f"sweep.{key}": value for key, value in (self.params or {}).items()}
        tracking_params = {
            "sweep.study_name": study_name,
            "sweep.n_trials": self.n_trials,
            "sweep.sampler": type(self.sampler).__name__,
            "sweep.directions": json.dumps(self._get_directions()),
            "sweep.pruner": str(self.study_cfg.pruner.get("name", "none")),
            **search_space,
        }
        for key, value in tracking_params.items():
            client.log_param(run_id, key, str(value)[: tracking.MAX_PARAM_LENGTH])
        return run_id

    def _fail_mlflow_run(self, run_id: str | None, message: str, status: str = "FAILED") -> None:
        if not run_id:
            return
        client = self._client()
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - the run may never have been created
            return
        if run.info.status == "RUNNING":
            client.set_tag(run_id, tracking.TAG_ERROR, message[:5000])
            client.set_terminated(run_id, status=status)

    def _trial_run_status(self, trial: Any) -> str | None:
        """The status of the trial's MLflow run, None if it has none (yet)."""
        run_id = self.study._storage.get_trial(trial._trial_id).user_attrs.get(USER_ATTR_RUN_ID)
        if not run_id:
            return None
        try:
            return self._client().get_run(run_id).info.status
        except Exception:  # noqa: BLE001 - the run may never have been created
            return None

    def _record_failed_trial_run(self, trial: Any, error: BaseException | str) -> None:
        """Make sure a failed trial has a FAILED MLflow child run carrying its error."""
        message = str(error) or type(error).__name__
        frozen = self.study._storage.get_trial(trial._trial_id)
        run_id = frozen.user_attrs.get(USER_ATTR_RUN_ID)
        if run_id:
            client = self._client()
            run = client.get_run(run_id)
            if tracking.TAG_ERROR not in run.data.tags:
                client.set_tag(run_id, tracking.TAG_ERROR, message[:5000])
            if run.info.status == "RUNNING":
                client.set_terminated(run_id, status="FAILED")
            return
        # The job failed before it could open its run (e.g. an override Hydra refused).
        experiment_id = tracking.prepare_experiment(
            self.tracking_uri, self.experiment, self.artifact_location
        )
        client = self._client()
        run = client.create_run(
            experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                tracking.TAG_PARENT_RUN: self.parent_run_id,
                TAG_STUDY: self.study.study_name,
                TAG_TRIAL_NUMBER: str(trial.number),
                tracking.TAG_ERROR: message[:5000],
                tracking.TAG_ERROR_TYPE: type(error).__name__,
            },
        )
        for name, value in trial.params.items():
            client.log_param(run.info.run_id, name, str(value))
        client.set_terminated(run.info.run_id, status="FAILED")
        self.study._storage.set_trial_user_attr(trial._trial_id, USER_ATTR_RUN_ID, run.info.run_id)

    def _on_stale_trial(self, study: Any, trial: Any) -> None:
        """Optuna failed a trial whose process stopped beating: fail its MLflow run too."""
        log.warning("Trial %d was left RUNNING by a process that died: marked FAIL", trial.number)
        self._fail_mlflow_run(
            trial.user_attrs.get(USER_ATTR_RUN_ID),
            "The process running this trial stopped (no Optuna heartbeat): marked failed.",
        )

    def _fail_orphaned_child_runs(self) -> None:
        """Child runs still RUNNING whose trial is not running any more: mark them FAILED."""
        import optuna

        running_trials = {
            str(t.number)
            for t in self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            )
        }
        client = self._client()
        experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
        children = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{tracking.TAG_PARENT_RUN}` = '{self.parent_run_id}'"
                " and attributes.status = 'RUNNING'"
            ),
        )
        for run in children:
            if run.data.tags.get(TAG_TRIAL_NUMBER) not in running_trials:
                self._fail_mlflow_run(
                    run.info.run_id, "The sweep process that ran this trial stopped."
                )

    # ------------------------------------------------------------------- trials
    def _finished_and_running(self) -> tuple[int, int]:
        import optuna

        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        finished = sum(
            s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states
        )
        running = sum(s == optuna.trial.TrialState.RUNNING for s in states)
        return finished, running

    def _enqueue_seed_trial(self, distributions: dict[str, Any]) -> None:
        """Queue the seed preset's values of the swept keys as the study's first trial."""
        from optuna.distributions import CategoricalDistribution

        from mobitune.paths import config_dir

        if any(USER_ATTR_SEED_TRIAL in t.user_attrs for t in self.study.get_trials(deepcopy=False)):
            return
        seed_preset = OmegaConf.load(config_dir() / "experiment" / "seed.yaml")
        params: dict[str, Any] = {}
        for name, distribution in distributions.items():
            value = OmegaConf.select(seed_preset, name, default=None)
            if value is None:
                value = OmegaConf.select(self.config, name, default=None)
            if (
                isinstance(distribution, CategoricalDistribution)
                and value not in distribution.choices
            ):
                log.warning(
                    "enqueue_seed: the seed's %s=%r is not among the choices %s; sampled instead",
                    name,
                    value,
                    list(distribution.choices),
                )
                continue
            params[name] = value
        self.study.enqueue_trial(params, user_attrs={USER_ATTR_SEED_TRIAL: True})
        log.info("Enqueued the seed preset's values as the first trial: %s", params)

    def _link_overrides(self, trial: Any) -> tuple[str, ...]:
        return (
            f"study.trial_number={trial.number}",
            f"study.name={_quote(self.study.study_name)}",
            f"study.storage={_quote(self.storage)}",
            f"tracking.parent_run_id={_quote(self.parent_run_id)}",
            f"study.sweeper_pid={os.getpid()}",
        )

    def _tell_study(self, trial: Any, **kwargs: Any) -> None:
        """`study.tell`, minus the GridSampler's complaint when the grid is exhausted."""
        try:
            self.study.tell(trial, **kwargs)
        except RuntimeError as error:
            # GridSampler calls Study.stop() after the last grid point, which Optuna only
            # allows inside Study.optimize; the trial's state is already stored.
            if "Study.stop" not in str(error):
                raise

    def _tell(self, trial: Any, ret: Any, directions: list[str]) -> bool:
        """Tell Optuna how a job ended; True if the trial failed."""
        import optuna

        if ret.status != JobStatus.COMPLETED:
            error = ret._return_value
            log.warning("Trial %d failed: %s", trial.number, error)
            self._record_failed_trial_run(trial, error)
            self._tell_study(trial, state=optuna.trial.TrialState.FAIL)
            return True
        value = ret.return_value
        if isinstance(value, PrunedTrialResult):
            self._tell_study(trial, state=optuna.trial.TrialState.PRUNED)
            return False
        try:
            values = [float(v) for v in as_list(value)]
            if len(values) != len(directions) or any(math.isnan(v) for v in values):
                raise ValueError(f"expected {len(directions)} number(s), got {value!r}")
        except (TypeError, ValueError) as error:
            self._record_failed_trial_run(trial, f"Invalid objective value: {error}")
            self._tell_study(trial, state=optuna.trial.TrialState.FAIL)
            return True
        self._tell_study(trial, values=values)
        return False

    def _launch(self, trials: list[Any], overrides: Sequence[Sequence[str]], directions) -> int:
        """Run one batch of trials; return how many failed."""
        import optuna

        try:
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
        except KeyboardInterrupt:
            for trial in trials:
                self._tell_study(trial, state=optuna.trial.TrialState.FAIL)
                run_id = self.study._storage.get_trial(trial._trial_id).user_attrs.get(
                    USER_ATTR_RUN_ID
                )
                self._fail_mlflow_run(run_id, "Interrupted (Ctrl-C).", status="KILLED")
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a worker process was killed
            log.error("The launcher failed for trials %s: %s", [t.number for t in trials], error)
            failed = 0
            for trial in trials:
                # A trial whose run had finished is not a failure: only its returned value
                # was lost with the batch. Optuna needs a value, so it is run again.
                if self._trial_run_status(trial) != "FINISHED":
                    self._record_failed_trial_run(trial, error)
                    failed += 1
                self._tell_study(trial, state=optuna.trial.TrialState.FAIL)
            return failed
        return sum(
            self._tell(trial, ret, directions) for trial, ret in zip(trials, returns, strict=True)
        )

    # -------------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> None:
        import optuna

        # mobitune drives Optuna's heartbeat and plots on purpose; their "experimental"
        # and "use Study.optimize" warnings would only be noise in every sweep's log.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

        self._check_sampler_dependencies()
        directions = self._directions_for_objective()
        validate_pruning(self.study_cfg, self.config.objective)
        storage_url = self._storage_url()
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config()
        params_conf.extend(arguments)
        distributions, fixed_params, fixed_overrides = create_params_from_overrides(params_conf)
        for name in fixed_params:
            distributions.pop(name, None)
        if isinstance(self.sampler, functools.partial) and (
            self.sampler.func == optuna.samplers.GridSampler
        ):
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))

        heartbeat, grace = heartbeat_settings(self.study_cfg)
        storage = open_storage(storage_url, heartbeat, grace, self._on_stale_trial)
        try:
            self.study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.sampler,
                directions=directions,
                load_if_exists=True,
            )
        except ValueError as error:
            raise MobituneError(f"Cannot open study {self.study_name!r}: {error}") from error
        if [d.name.lower() for d in self.study.directions] != directions:
            raise ConfigError(
                "hydra.sweeper.direction",
                directions,
                f"the directions the stored study {self.study.study_name!r} was created with "
                f"({[d.name.lower() for d in self.study.directions]})",
                "Use another hydra.sweeper.study_name for a different objective.",
            )
        self.parent_run_id = self._find_or_create_parent_run(self.study.study_name, storage_url)
        log.info(
            "Study %s in %s: %d/%d trials finished; MLflow parent run %s",
            self.study.study_name,
            _redact(storage_url),
            self._finished_and_running()[0],
            self.n_trials,
            self.parent_run_id,
        )
        if bool(self.study_cfg.get("enqueue_seed", False)):
            self._enqueue_seed_trial(distributions)

        failure_budget = math.floor(self.max_failure_rate * self.n_trials)
        failures = 0
        status = "FAILED"
        try:
            while True:
                optuna.storages.fail_stale_trials(self.study)
                finished, running = self._finished_and_running()
                remaining = self.n_trials - finished - running
                if (
                    remaining > 0
                    and isinstance(self.sampler, optuna.samplers.GridSampler)
                    and self.sampler.is_exhausted(self.study)
                ):
                    # Failed grid points count as visited: asking again would only repeat
                    # a point already run.
                    log.warning(
                        "Every grid point has been tried; %d trial(s) failed and are not rerun",
                        remaining,
                    )
                    break
                if remaining <= 0:
                    if running == 0:
                        break
                    # Trials held by another (or a dead) process: wait for them to end or
                    # to be failed as stale, then fill the gap if they failed.
                    log.info("Waiting for %d trial(s) running elsewhere", running)
                    threading.Event().wait(heartbeat)
                    continue
                batch = [self.study.ask() for _ in range(min(self.n_jobs, remaining))]
                # Heartbeats from the moment a trial is RUNNING: should this process die
                # before the trial ends, the next run of the sweep finds it stale.
                trial_ids = [trial._trial_id for trial in batch]
                with HeartbeatThread(self.study._storage, trial_ids, heartbeat):
                    overrides = [
                        tuple(trial_overrides) + self._link_overrides(trial)
                        for trial, trial_overrides in zip(
                            batch,
                            self._configure_trials(
                                batch, distributions, fixed_params, fixed_overrides
                            ),
                            strict=True,
                        )
                    ]
                    failures += self._launch(batch, overrides, directions)
                if failures > failure_budget:
                    raise MobituneError(
                        f"{failures} trials of study {self.study.study_name!r} failed, more than "
                        f"hydra.sweeper.max_failure_rate={self.max_failure_rate} allows for "
                        f"{self.n_trials} trials; see the FAILED runs' `mobitune.error` tags."
                    )
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._finish(status, directions)

    # ------------------------------------------------------------------- summary
    def _finish(self, status: str, directions: list[str]) -> None:
        try:
            self._fail_orphaned_child_runs()
            summary = self._refresh_parent(directions)
            if status == "FINISHED":
                self._write_results(summary)
                self._register_best(summary)
        finally:
            self._client().set_terminated(self.parent_run_id, status=status)

    def _refresh_parent(self, directions: list[str]) -> dict[str, Any]:
        """Log the best trial(s), counts and Optuna's plots on the parent run."""
        import optuna

        client = self._client()
        trials = self.study.get_trials(deepcopy=False)
        counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
        for trial in trials:
            counts[trial.state.name.lower()] += 1
        finished = counts["complete"] + counts["pruned"]
        for name, count in counts.items():
            client.log_metric(self.parent_run_id, f"trials.{name}", count, step=finished)
        summary: dict[str, Any] = {"name": "optuna", "study": self.study.study_name}
        completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        with tempfile.TemporaryDirectory(prefix="mobitune-sweep-") as folder:
            out = Path(folder)
            if completed and len(directions) == 1:
                best = self.study.best_trial
                summary.update(
                    best_params=best.params,
                    best_value=best.value,
                    best_trial=best.number,
                    best_run_id=best.user_attrs.get(USER_ATTR_RUN_ID),
                )
                client.log_metric(self.parent_run_id, "best_value", best.value, step=finished)
                client.set_tag(self.parent_run_id, "best_trial_number", str(best.number))
                for name, value in best.params.items():
                    client.set_tag(self.parent_run_id, f"best.{name}", str(value))
                if summary["best_run_id"]:
                    client.set_tag(self.parent_run_id, TAG_BEST_RUN, summary["best_run_id"])
            elif completed:
                front = [
                    {
                        "trial": t.number,
                        "values": t.values,
                        "params": t.params,
                        "run_id": t.user_attrs.get(USER_ATTR_RUN_ID),
                    }
                    for t in self.study.best_trials
                ]
                summary["pareto_front"] = front
                (out / "pareto_front.json").write_text(json.dumps(front, indent=2))
                client.log_artifact(self.parent_run_id, str(out / "pareto_front.json"))
                client.set_tag(self.parent_run_id, "pareto_front_size", str(len(front)))
            (out / "best.json").write_text(json.dumps(summary, indent=2, default=str))
            client.log_artifact(self.parent_run_id, str(out / "best.json"))
            if trials:
                self.study.trials_dataframe().to_csv(out / "trials.csv", index=False)
                client.log_artifact(self.parent_run_id, str(out / "trials.csv"), "optuna")
            for path in self._plots(out, directions, completed):
                client.log_artifact(self.parent_run_id, str(path), "optuna")
        return summary

    def _plots(self, folder: Path, directions: list[str], completed: list[Any]) -> list[Path]:
        """Optuna's plots as PNG files; a plot Optuna cannot draw yet is left out, not fatal."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots

        metric_names = [str(m) for m in as_list(self.config.objective.metric)]
        plots: list[tuple[str, Any]] = []
        if len(directions) == 1:
            plots += [
                (
                    "optimization_history",
                    lambda: optuna_plots.plot_optimization_history(self.study),
                ),
                ("param_importances", lambda: optuna_plots.plot_param_importances(self.study)),
                ("parallel_coordinate", lambda: optuna_plots.plot_parallel_coordinate(self.study)),
                ("intermediate_values", lambda: optuna_plots.plot_intermediate_values(self.study)),
            ]
        else:
            plots.append(
                (
                    "pareto_front",
                    lambda: optuna_plots.plot_pareto_front(self.study, target_names=metric_names),
                )
            )
            for index, name in enumerate(metric_names):
                plots.append(
                    (
                        f"optimization_history_{name}",
                        functools.partial(
                            optuna_plots.plot_optimization_history,
                            self.study,
                            target=functools.partial(lambda t, i: t.values[i], i=index),
                            target_name=name,
                        ),
                    )
                )
        written = []
        for name, draw in plots:
            if not completed:
                break
            try:
                axes = draw()
                figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
                path = folder / f"{name}.png"
                figure.savefig(path, dpi=100, bbox_inches="tight")
                written.append(path)
            except Exception as error:  # noqa: BLE001 - e.g. importances need 2+ trials
                log.info("Optuna plot %s not drawn yet: %s", name, error)
            finally:
                plt.close("all")
        return written

    def _write_results(self, summary: dict[str, Any]) -> None:
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(
            OmegaConf.create(json.loads(json.dumps(summary, default=str))),
            f"{self.config.hydra.sweep.dir}/optimization_results.yaml",
        )

    def _register_best(self, summary: dict[str, Any]) -> None:
        name = self.study_cfg.get("register_best")
        run_id = summary.get("best_run_id")
        if not name or not run_id:
            return
        from mobitune.registry import register_run_model

        alias = self.study_cfg.get("register_alias") or None
        client = self._client()
        # A finished sweep run again (resumed with nothing left to do) keeps its version.
        existing = (
            client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
            if "'" not in str(name)
            else []
        )
        if existing:
            version = int(existing[0].version)
            if alias:
                client.set_registered_model_alias(str(name), str(alias), str(version))
            log.info("The best trial's model is already %s version %s", name, version)
        else:
            version = register_run_model(
                run_id, str(name), alias=alias, tracking_uri=self.tracking_uri
            )
            log.info("Registered the best trial's model as %s version %s", name, version)
        self._client().set_tag(self.parent_run_id, "mobitune.registered_model", f"{name}/{version}")
