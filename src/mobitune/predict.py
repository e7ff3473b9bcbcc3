"""Predicting classes of image files with a logged or registered mobitune model.

A model is named by any MLflow model URI (`runs:/RUN_ID/model`, `models:/NAME@ALIAS`,
`models:/NAME/VERSION`, `models:/m-...`), by a bare logged-model id (`m-...`) or by a
bare run id. The logged Keras model takes RGB pixels in [0, 255] (its preprocessing is
built in); its class names come from the model's metadata (or the run's
`data.class_names` param), its input size from the model, and the resize interpolation
from the run's `data.interpolation`, so images are decoded exactly as training decoded them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from mobitune import data as data_module
from mobitune.errors import MobituneError
from mobitune.registry import (
    MODEL_ARTIFACT,
    RunStore,
    open_store,
    run_param,
    using_tracking_uri,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_INTERPOLATION = "bilinear"
OUTPUT_FORMATS = (".csv", ".json")
# Model URIs that name a model in a tracking store or its registry.
STORE_SCHEMES = ("runs:", "models:")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class LoadedModel:
    """A Keras model with what predicting needs: class names, input size, interpolation."""

    model: keras.Model
    class_names: list[str]
    image_size: int
    interpolation: str
    model_uri: str
    run_id: str | None
    # Size of the logged `.keras` file: what an export is compared with.
    keras_file_bytes: int | None = None

    def predict_pixels(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for uint8/float RGB images (N, size, size, 3)."""
        batch = np.asarray(images, dtype=np.float32)
        return np.asarray(self.model(batch, training=False), dtype=np.float64)


@dataclass
class Prediction:
    """The predicted class of one image file."""

    path: Path
    class_index: int
    class_name: str
    probability: float
    probabilities: list[float]


@dataclass
class FailedImage:
    """An image file that could not be decoded."""

    path: Path
    reason: str


def normalise_model_uri(model_uri: str) -> str:
    """A full MLflow model URI for a URI, a logged-model id (`m-...`) or a run id."""
    text = str(model_uri).strip()
    if text.startswith("m-") and "/" not in text:
        return f"models:/{text}"
    if _RUN_ID.match(text):
        return f"runs:/{text}/{MODEL_ARTIFACT}"
    return text


def _image_size(model: keras.Model, model_uri: str) -> int:
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] is None:
        raise MobituneError(
            f"The model {model_uri} takes inputs of shape {shape}; mobitune predicts with "
            "models taking square RGB images (batch, size, size, 3)."
        )
    return int(shape[1])


def _class_names(info: Any, run: Any, num_classes: int, model_uri: str) -> list[str]:
    names = (info.metadata or {}).get("class_names")
    if not names and run is not None:
        logged = run_param(run, "data.class_names")
        if logged:
            names = json.loads(logged)
    if not names:
        log.warning(
            "The model %s carries no class names (metadata or run param data.class_names): "
            "reporting class indices instead",
            model_uri,
        )
        return [str(index) for index in range(num_classes)]
    names = [str(name) for name in names]
    if len(names) != num_classes:
        raise MobituneError(
            f"The model {model_uri} outputs {num_classes} classes but names {len(names)} "
            f"({names}); it was not logged by mobitune, or its metadata was edited."
        )
    return names


def _store_for(uri: str, tracking_uri: str | None) -> RunStore | None:
    """The store a model URI is read from; optional for a local path (no store needed)."""
    if uri.startswith(STORE_SCHEMES):
        return open_store(tracking_uri)
    try:
        return open_store(tracking_uri)  # only to read the model's run, if it is there
    except MobituneError:
        return None


def _model_info(uri: str, store: RunStore | None) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as error:
        message = getattr(error, "message", str(error))
        where = f" in {store.uri} ({store.source})" if store else ""
        raise MobituneError(
            f"Cannot find the model {uri}{where}: {message}. A model URI looks like "
            "runs:/RUN_ID/model, models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-MODEL_ID "
            "(or a local model folder); `mobitune register` adds a run's model to the registry."
        ) from error


def _interpolation(run: Any, uri: str) -> str:
    interpolation = str(run_param(run, "data.interpolation", "")) if run else ""
    if interpolation not in data_module.INTERPOLATIONS:
        log.warning(
            "The run of model %s names no resize interpolation: using %s",
            uri,
            DEFAULT_INTERPOLATION,
        )
        return DEFAULT_INTERPOLATION
    return interpolation


def load_model(model_uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """Load the Keras model at `model_uri`, with its class names, input size and interpolation.

    `runs:/` and `models:/` URIs are read from the store (`tracking_uri`, else
    `MLFLOW_TRACKING_URI`, else the project's); the model's run supplies the class names
    (if the model's metadata lacks them) and the resize interpolation.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = normalise_model_uri(model_uri)
    store = _store_for(uri, tracking_uri)
    with using_tracking_uri(store.uri) if store else contextlib.nullcontext():
        info = _model_info(uri, store)
        flavor = (info.flavors or {}).get("keras")
        if flavor is None:
            raise MobituneError(
                f"The model {uri} is not a Keras model (flavors: {sorted(info.flavors or {})})."
            )
        with tempfile.TemporaryDirectory(prefix="mobitune-model-") as folder:
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
                model = mlflow.keras.load_model(str(local))
            except (MlflowException, OSError, ValueError) as error:
                raise MobituneError(f"Cannot load the Keras model {uri}: {error}") from error
            keras_bytes = _folder_bytes(local / str(flavor.get("data", "data")))
    run = None
    if info.run_id and store is not None:
        try:
            run = store.client.get_run(info.run_id)
        except MlflowException:
            log.warning("The run %s of model %s is not in %s", info.run_id, uri, store.uri)
    return LoadedModel(
        model=model,
        class_names=_class_names(info, run, int(model.output_shape[-1]), uri),
        image_size=_image_size(model, uri),
        interpolation=_interpolation(run, uri),
        model_uri=uri,
        run_id=info.run_id,
        keras_file_bytes=keras_bytes,
    )


def _folder_bytes(folder: Path) -> int | None:
    """Bytes of the saved Keras model (the `.keras` file MLflow logged), None if absent."""
    if not folder.is_dir():
        return None
    return sum(path.stat().st_size for path in folder.rglob("*.keras") if path.is_file()) or None


def _visible(path: Path, folder: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(folder).parts)


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by `paths`: files as given, folders searched recursively.

    Folders contribute their visible image files (by extension), sorted. Raises
    MobituneError for a path that does not exist or a named file that is not an image.
    """
    if not paths:
        raise MobituneError("Name at least one image file or folder to predict.")
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            images = sorted(
                candidate
                for candidate in path.rglob("*")
                if data_module.is_image_candidate(candidate) and _visible(candidate, path)
            )
            if not images:
                raise MobituneError(
                    f"The folder {str(path)!r} holds no image files (looked for "
                    f"{', '.join(sorted(data_module.IMAGE_EXTENSIONS))}, in sub-folders too)."
                )
            found.extend(images)
        elif path.is_file():
            if path.suffix.lower() not in data_module.IMAGE_EXTENSIONS:
                raise MobituneError(
                    f"{str(path)!r} is not an image file: its extension is not one of "
                    f"{', '.join(sorted(data_module.IMAGE_EXTENSIONS))}."
                )
            found.append(path)
        else:
            raise MobituneError(f"No file or folder at {str(path)!r}.")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path, None)
    return list(unique)


def _decode(loaded: LoadedModel, path: Path) -> np.ndarray | FailedImage:
    try:
        return data_module.load_image(path, loaded.image_size, loaded.interpolation)
    except Exception as error:  # noqa: BLE001 - any decoder failure: report, go on
        return FailedImage(path=path, reason=f"{type(error).__name__}: {error}")


def iter_predictions(
    loaded: LoadedModel, paths: Sequence[Path], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[Prediction | FailedImage]:
    """Predict `paths` in batches, in order; unreadable files yield a FailedImage."""
    if batch_size < 1:
        raise MobituneError(f"--batch-size must be a positive integer, not {batch_size}.")
    with ThreadPoolExecutor() as pool:
        for start in range(0, len(paths), batch_size):
            batch_paths = list(paths[start : start + batch_size])
            decoded = list(pool.map(lambda path: _decode(loaded, path), batch_paths))
            images = [item for item in decoded if not isinstance(item, FailedImage)]
            probabilities = loaded.predict_pixels(np.stack(images)) if images else None
            row = 0
            for path, item in zip(batch_paths, decoded, strict=True):
                if isinstance(item, FailedImage):
                    yield item
                    continue
                scores = probabilities[row]
                row += 1
                index = int(np.argmax(scores))
                yield Prediction(
                    path=path,
                    class_index=index,
                    class_name=loaded.class_names[index],
                    probability=float(scores[index]),
                    probabilities=[float(value) for value in scores],
                )


def predict_images(
    loaded: LoadedModel, paths: Sequence[Path], batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[list[Prediction], list[FailedImage]]:
    """All predictions for `paths`, and the files that could not be decoded."""
    predictions: list[Prediction] = []
    failed: list[FailedImage] = []
    for item in iter_predictions(loaded, paths, batch_size):
        (failed if isinstance(item, FailedImage) else predictions).append(item)
    return predictions, failed


def format_line(prediction: Prediction) -> str:
    """One tab-separated line: path, predicted class name, probability."""
    return f"{prediction.path}\t{prediction.class_name}\t{prediction.probability:.4f}"


def output_format(path: Path) -> str:
    """`.csv` or `.json` from an output file name, or a MobituneError."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise MobituneError(
            f"--output {str(path)!r}: the file name must end in .csv or .json (it picks the "
            "format)."
        )
    return suffix


def write_predictions(
    predictions: Sequence[Prediction],
    failed: Sequence[FailedImage],
    class_names: Sequence[str],
    path: Path,
    model_uri: str,
) -> None:
    """Write predictions as CSV (one row per image) or JSON (with the model and failures)."""
    kind = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        if kind == ".csv":
            _write_csv(predictions, class_names, handle)
        else:
            json.dump(
                {
                    "model_uri": model_uri,
                    "class_names": list(class_names),
                    "predictions": [
                        {
                            "path": str(item.path),
                            "class_name": item.class_name,
                            "class_index": item.class_index,
                            "probability": item.probability,
                            "probabilities": dict(
                                zip(class_names, item.probabilities, strict=True)
                            ),
                        }
                        for item in predictions
                    ],
                    "failed": [{"path": str(item.path), "reason": item.reason} for item in failed],
                },
                handle,
                indent=2,
            )


def _write_csv(predictions: Sequence[Prediction], class_names: Sequence[str], handle: TextIO):
    writer = csv.writer(handle)
    writer.writerow(
        ["path", "class_name", "class_index", "probability"]
        + [f"probability_{name}" for name in class_names]
    )
    for item in predictions:
        writer.writerow(
            [str(item.path), item.class_name, item.class_index, f"{item.probability:.6f}"]
            + [f"{value:.6f}" for value in item.probabilities]
        )
