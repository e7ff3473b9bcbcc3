"""Reading runs back from an MLflow store, and registering their models.

Every command that reads runs (`reproduce`, `predict`, `register`, `export`) finds its
store the same way: `--tracking-uri` if given, else the `MLFLOW_TRACKING_URI` environment
variable, else the project's default store (what `tracking.uri` in the config tree
resolves to, e.g. `sqlite:///<project>/mlruns/mlflow.db`). A store that does not exist
is reported, never created.

`register_run_model` is the public entry point for putting a run's model into the MLflow
model registry of the same store (the sweeper calls it for a sweep's best trial).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mobitune.errors import MobituneError

if TYPE_CHECKING:  # pragma: no cover
    import mlflow
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "config.yaml"
RECENT_RUNS_SHOWN = 5


@contextlib.contextmanager
def isolated_hydra() -> Iterator[None]:
    """Let a block initialise Hydra's global state of its own, restoring the caller's after.

    Hydra allows one global initialisation at a time; a caller (a test holding
    `initialize_config_dir`, or a Hydra app) may already have one.
    """
    from hydra.core.global_hydra import GlobalHydra

    instance = GlobalHydra.instance()
    saved = instance.hydra if instance.is_initialized() else None
    instance.clear()
    try:
        yield
    finally:
        # `initialize_*` restores its own backup on exit, which may be a new object.
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def compose_config(
    config_name: str, search_path: Sequence[Path], overrides: Sequence[str] = ()
) -> DictConfig:
    """Compose `config_name` with Hydra's compose API from folders searched in order.

    Hydra's errors (bad override syntax, unknown keys) become a MobituneError.
    """
    from hydra import compose, initialize_config_search_path
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mobitune.paths import register_resolvers

    register_resolvers()
    sources = [Path(folder).resolve().as_uri() for folder in search_path]
    try:
        with isolated_hydra(), initialize_config_search_path(sources):
            return compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise MobituneError(f"Cannot apply the overrides {list(overrides)}: {error}") from error


def default_tracking_uri() -> str:
    """The project's default store: `tracking.uri` of the config tree, resolved here."""
    from omegaconf import OmegaConf

    from mobitune.paths import config_dir

    cfg = compose_config("config", [config_dir()])
    return str(OmegaConf.select(cfg, "tracking.uri"))


def _resolve(tracking_uri: str | None) -> tuple[str, str]:
    """The store URI and where it came from (for error messages)."""
    if tracking_uri:
        return normalise_store_uri(tracking_uri, "--tracking-uri"), "--tracking-uri"
    from_env = os.environ.get(TRACKING_URI_ENV_VAR)
    if from_env:
        source = f"the {TRACKING_URI_ENV_VAR} environment variable"
        return normalise_store_uri(from_env, source), source
    return default_tracking_uri(), "the project's default store, config `tracking.uri`"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """`tracking_uri` if given, else `MLFLOW_TRACKING_URI`, else the project's default store.

    A path to an existing SQLite file is accepted and made a `sqlite:///` URI.
    """
    return _resolve(tracking_uri)[0]


def normalise_store_uri(uri: str, source: str = "--tracking-uri") -> str:
    """A database or server URI for `uri`; a path to a `.db` file becomes `sqlite:///PATH`."""
    uri = str(uri).strip()
    scheme = urlparse(uri).scheme
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        if scheme == "file":
            raise MobituneError(
                f"{source} is {uri!r}, a folder of MLflow's old file store, which MLflow 3 "
                "no longer reads. mobitune stores runs in SQLite: pass e.g. "
                "`--tracking-uri sqlite:///mlruns/mlflow.db`."
            )
        return uri
    path = Path(uri).expanduser()
    if path.is_dir():
        raise MobituneError(
            f"{source} is the folder {uri!r}, not a store. Pass the database inside it, "
            f"e.g. `--tracking-uri sqlite:///{(path / 'mlflow.db').resolve()}`."
        )
    return f"sqlite:///{path.resolve()}"


@dataclass
class RunStore:
    """An existing MLflow store opened for reading runs (and registering models)."""

    uri: str
    source: str
    client: mlflow.MlflowClient

    def get_run(self, run_id: str) -> mlflow.entities.Run:
        """The run `run_id`, or a MobituneError naming the store and its most recent runs."""
        from mlflow.exceptions import MlflowException

        run_id = str(run_id).strip()
        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise MobituneError(
                    f"Cannot read run {run_id!r} from {self.uri}: {error.message}"
                ) from error
        raise MobituneError(
            f"No run {run_id!r} in the MLflow store {self.uri} ({self.source}). "
            f"{self._recent_runs_hint()} Pass the full run id (32 hex digits, shown by "
            "`mlflow ui` and in the training log), or point `--tracking-uri` at the store "
            "the run was logged to."
        )

    def _recent_runs_hint(self) -> str:
        try:
            experiments = [e.experiment_id for e in self.client.search_experiments()]
            runs = self.client.search_runs(
                experiments,
                order_by=["attributes.start_time DESC"],
                max_results=RECENT_RUNS_SHOWN,
            )
        except Exception:  # noqa: BLE001 - only a hint
            return ""
        if not runs:
            return "The store holds no runs."
        listed = ", ".join(
            f"{run.info.run_id} ({run.info.run_name}, {run.info.status})" for run in runs
        )
        return f"Most recent runs: {listed}."

    def load_config(self, run: mlflow.entities.Run) -> DictConfig:
        """The resolved config a run logged as its `config.yaml` artifact."""
        from omegaconf import DictConfig, OmegaConf

        with tempfile.TemporaryDirectory(prefix="mobitune-config-") as folder:
            try:
                path = self.client.download_artifacts(run.info.run_id, CONFIG_ARTIFACT, folder)
                config = OmegaConf.load(path)
            except Exception as error:  # noqa: BLE001 - absent, unreadable or not YAML
                raise MobituneError(
                    f"Run {run.info.run_id} has no readable `{CONFIG_ARTIFACT}` artifact "
                    f"({type(error).__name__}: {error}). Only runs logged by `mobitune train` "
                    "(or `mobitune sweep`) that got past their start carry their config."
                ) from error
        if not isinstance(config, DictConfig) or "data" not in config:
            raise MobituneError(
                f"The `{CONFIG_ARTIFACT}` of run {run.info.run_id} is not a mobitune run "
                "config (it has no `data` section)."
            )
        return config


def open_store(tracking_uri: str | None = None) -> RunStore:
    """Open the store named by `tracking_uri` (or its defaults); never create one."""
    import mlflow

    from mobitune.tracking import sqlite_path

    uri, source = _resolve(tracking_uri)
    database = sqlite_path(uri)
    if database is not None and not database.is_file():
        raise MobituneError(
            f"No MLflow store at {uri} ({source}): the file {str(database)!r} does not exist. "
            "Train a run first (`mobitune train ...`), or point `--tracking-uri` (or "
            f"{TRACKING_URI_ENV_VAR}) at the store your runs were logged to."
        )
    return RunStore(uri=uri, source=source, client=mlflow.MlflowClient(tracking_uri=uri))


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Make `uri` MLflow's current store (and registry) for a block; restore the previous.

    MLflow resolves `runs:/` and `models:/` URIs against its current store.
    """
    import mlflow

    # MLflow mirrors its current tracking URI into this environment variable.
    previous = os.environ.get(TRACKING_URI_ENV_VAR)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@dataclass
class ModelVersionInfo:
    """A registered model version: `models:/NAME/VERSION` (and `models:/NAME@ALIAS`)."""

    name: str
    version: int
    alias: str | None
    run_id: str

    @property
    def model_uri(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version}"


def logged_model_id(store: RunStore, run: mlflow.entities.Run) -> str:
    """The id (`m-...`) of the model named `model` that `run` logged (the latest if several)."""
    from mlflow.exceptions import MlflowException

    try:
        found = store.client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
    except MlflowException as error:
        raise MobituneError(
            f"Cannot list the models of run {run.info.run_id} in {store.uri}: {error.message}"
        ) from error
    models = [model for model in found if model.name == MODEL_ARTIFACT]
    if not models:
        raise MobituneError(
            f"Run {run.info.run_id} logged no model named `{MODEL_ARTIFACT}` "
            f"(status {run.info.status}; runs trained with `tracking.log_model=false`, and "
            "pruned sweep trials, have none). Use a run that finished with its model logged."
        )
    return max(models, key=lambda model: model.creation_timestamp or 0).model_id


def register_model_version(
    run_id: str, name: str, alias: str | None = None, tracking_uri: str | None = None
) -> ModelVersionInfo:
    """Register run `run_id`'s logged model as a new version of `name`; optionally alias it.

    The registry is the one of the run's store. The alias (e.g. `champion`) moves to the new
    version if another version had it. Raises MobituneError for an unknown run, a run
    without a model, or a name the registry refuses.
    """
    from mlflow.exceptions import MlflowException

    name = str(name).strip()
    if not name:
        raise MobituneError("A registered model needs a name: `--name NAME`.")
    store = open_store(tracking_uri)
    run = store.get_run(run_id)
    model_id = logged_model_id(store, run)
    client = store.client
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(
            name,
            source=f"models:/{model_id}",
            run_id=run.info.run_id,
            model_id=model_id,
            tags={"mobitune.run_id": run.info.run_id},
        )
        if alias:
            client.set_registered_model_alias(name, str(alias), version.version)
    except MlflowException as error:
        raise MobituneError(
            f"Registering run {run.info.run_id}'s model as {name!r} in {store.uri} failed: "
            f"{error.message}"
        ) from error
    log.info("Registered %s as %s version %s", model_id, name, version.version)
    return ModelVersionInfo(
        name=name, version=int(version.version), alias=alias, run_id=run.info.run_id
    )


def register_run_model(
    run_id: str, name: str, alias: str | None = None, tracking_uri: str | None = None
) -> int:
    """Register run `run_id`'s model under `name` (alias optional); return the new version.

    `tracking_uri` defaults like every command's `--tracking-uri`. See
    `register_model_version` for the details.
    """
    return register_model_version(run_id, name, alias, tracking_uri).version


def run_param(run: mlflow.entities.Run, key: str, default: Any = None) -> Any:
    """A logged param of `run` (a string), or `default`."""
    return run.data.params.get(key, default)
