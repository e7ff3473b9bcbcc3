"""MLflow tracking: the store, the experiment, one run's params, tags, metrics and artifacts.

MLflow 3 refuses its old file store, so runs go to SQLite under `mlruns/` by default.
Several processes (parallel sweep trials) may open a new store at once: creating the
schema and the experiment happens under a file lock beside the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mobitune.errors import ConfigError, MobituneError

if TYPE_CHECKING:  # pragma: no cover
    import mlflow

log = logging.getLogger(__name__)

TAG_VERSION = "mobitune.version"
TAG_GIT_COMMIT = "mobitune.git_commit"
TAG_DATA_FINGERPRINT = "mobitune.data_fingerprint"
TAG_ERROR = "mobitune.error"
TAG_ERROR_TYPE = "mobitune.error_type"
TAG_PARENT_RUN = "mlflow.parentRunId"
LOCK_TIMEOUT_SECONDS = 300
# MLflow rejects param values over this length.
MAX_PARAM_LENGTH = 6000


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, or None for other stores."""
    if not uri.startswith("sqlite:"):
        return None
    parsed = urlparse(uri)
    path = unquote(parsed.path)
    if uri.startswith("sqlite:////"):
        return Path(path)
    # sqlite:///relative.db -> path "/relative.db" in urlparse: relative to the cwd.
    return Path(path.lstrip("/")).resolve() if path else None


def default_artifact_location(uri: str, configured: str | None) -> str | None:
    """Artifacts beside a SQLite store (`<store folder>/artifacts`) unless configured."""
    if configured:
        return Path(str(configured)).expanduser().resolve().as_uri()
    database = sqlite_path(uri)
    if database is not None:
        return (database.parent / "artifacts").resolve().as_uri()
    return None


def validate_tracking_uri(uri: str) -> str:
    """Refuse a plain folder or `file:` URI, which MLflow 3 no longer accepts as a store."""
    if not uri:
        raise ConfigError(
            "tracking.uri", uri, "an MLflow tracking URI, e.g. sqlite:///mlruns/mlflow.db"
        )
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        raise ConfigError(
            "tracking.uri",
            uri,
            "a database or server URI (sqlite:///..., postgresql://..., http://...)",
            "MLflow 3 refuses its old file store; use e.g. "
            "`tracking.uri=sqlite:///path/to/mlruns/mlflow.db`.",
        )
    return uri


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive file lock beside a SQLite store (no-op for other stores)."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    from filelock import FileLock

    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock", timeout=LOCK_TIMEOUT_SECONDS):
        yield


def prepare_experiment(uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Open (creating if needed) the store and experiment; return the experiment id.

    Safe when several processes do it at once on a new SQLite store.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    validate_tracking_uri(uri)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        try:
            client = mlflow.MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    client.restore_experiment(found.experiment_id)
                experiment_id = found.experiment_id
            else:
                experiment_id = client.create_experiment(
                    experiment,
                    artifact_location=default_artifact_location(uri, artifact_location),
                )
        except MlflowException as error:
            raise MobituneError(
                f"Cannot open MLflow tracking store `tracking.uri={uri}`: {error.message}"
            ) from error
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config to dotted keys (`model.cut_layer`) with string values."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten_config(value, prefix=f"{name}."))
            else:
                flat[name] = "{}"
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


def git_commit(folder: Path) -> str | None:
    """The commit of the git checkout holding `folder`, or None outside a repository."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def source_tags(project_folder: Path) -> dict[str, str]:
    """Tags naming the mobitune version and the git commit the run came from."""
    from mobitune import __version__

    tags = {TAG_VERSION: __version__}
    package_commit = git_commit(Path(__file__).resolve().parent)
    project_commit = git_commit(project_folder)
    commit = package_commit or project_commit
    if commit:
        tags[TAG_GIT_COMMIT] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def log_params(params: Mapping[str, Any]) -> None:
    """Log params in batches (MLflow caps a batch at 100)."""
    import mlflow

    items = [(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


def record_failure(client: mlflow.MlflowClient, run_id: str, error: BaseException) -> None:
    """Tag a run with the error that ended it."""
    message = str(error) or type(error).__name__
    client.set_tag(run_id, TAG_ERROR, message[:5000])
    client.set_tag(run_id, TAG_ERROR_TYPE, type(error).__name__)


@contextlib.contextmanager
def tracked_run(
    run_name: str | None,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run; end it FINISHED, or FAILED (with the error as a tag) if it raises.

    Ctrl-C ends it KILLED. The experiment must have been prepared first.
    """
    import mlflow

    all_tags = dict(tags)
    if parent_run_id:
        all_tags[TAG_PARENT_RUN] = str(parent_run_id)
    run = mlflow.start_run(run_name=run_name, tags=all_tags)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as error:
        with contextlib.suppress(Exception):
            record_failure(mlflow.MlflowClient(), run.info.run_id, error)
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def epoch_logger():
    """A Keras callback logging each epoch's metrics to the active run with step=epoch."""
    import time

    import keras
    import mlflow

    class EpochMetricsLogger(keras.callbacks.Callback):
        """Logs loss, accuracy, val_loss, val_accuracy and epoch_seconds per epoch."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {
                key: float(value)
                for key, value in (logs or {}).items()
                if key in ("loss", "accuracy", "val_loss", "val_accuracy")
            }
            metrics["epoch_seconds"] = time.perf_counter() - self._started
            mlflow.log_metrics(metrics, step=epoch)

    return EpochMetricsLogger()


@contextlib.contextmanager
def _keras_input_example_directory() -> Iterator[None]:
    """Work around mlflow#16183 (open): the Keras flavor writes the input example before
    it creates the model folder. Create the folder first, for the duration of one call."""
    from mlflow.keras import save as keras_save

    original = keras_save._save_example

    def save_example(mlflow_model: Any, input_example: Any, path: str) -> Any:
        os.makedirs(path, exist_ok=True)
        return original(mlflow_model, input_example, path)

    keras_save._save_example = save_example
    try:
        yield
    finally:
        keras_save._save_example = original


def log_keras_model(
    model: Any,
    example: Any,
    class_names: list[str],
    artifact_name: str = "model",
) -> None:
    """Log a Keras model with a signature, an input example and its class names."""
    import keras
    import mlflow
    import numpy as np
    import tensorflow as tf
    from mlflow.models import infer_signature

    predictions = model.predict(example, verbose=0)
    signature = infer_signature(example, predictions)
    requirements = [
        f"tensorflow-cpu=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]
    # MLflow validates the input example by predicting with it: no progress bar for that
    # (with interactive logging off, Keras sends it to absl's logger instead).
    absl_logger = logging.getLogger("absl")
    absl_level = absl_logger.level
    absl_logger.setLevel(logging.WARNING)
    keras.utils.disable_interactive_logging()
    try:
        with _keras_input_example_directory():
            mlflow.keras.log_model(
                model,
                name=artifact_name,
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
                metadata={"class_names": list(class_names)},
            )
    finally:
        keras.utils.enable_interactive_logging()
        absl_logger.setLevel(absl_level)


def dataset_tags(fingerprint: str) -> dict[str, str]:
    return {TAG_DATA_FINGERPRINT: fingerprint}
