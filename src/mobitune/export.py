"""Exporting a trained model for mobile: TFLite (float32, float16 or int8), evaluated and logged.

The exported model is the logged serving model: it takes RGB pixels in [0, 255] as float32
and outputs class probabilities (float32), whatever the quantization inside, so it drops in
where the Keras model was used. `int8` is full-integer quantization calibrated with a seeded
sample of the run's training images (only the float32 input and output are converted at
the edges); `float16` halves the weights; `none` keeps float32.

Every export is evaluated on the run's test split and logged back to the run: the file
under `tflite/`, metrics `tflite.size_bytes`, `tflite.test_accuracy`, `tflite.latency_ms`
(the latest export) and the same per quantization (`tflite.int8.size_bytes`, ...), plus
the Keras model's size and accuracy on the same images (`tflite.keras_size_bytes`,
`tflite.keras_test_accuracy`) for comparison.

TensorFlow 2.21 still ships `tf.lite.TFLiteConverter`; its `tf.lite.Interpreter` is
deprecated in favour of LiteRT (`ai-edge-litert`), which is used when installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobitune.errors import ConfigError, MobituneError

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from mobitune.data import LoadedData

log = logging.getLogger(__name__)

FORMATS = ("tflite",)
QUANTIZATIONS = ("none", "float16", "int8")
DEFAULT_CALIBRATION_IMAGES = 200
CALIBRATION_SEED = 0
LATENCY_WARMUP = 3
LATENCY_REPEATS = 30
ARTIFACT_FOLDER = "tflite"
TAG_QUANTIZE = "mobitune.tflite.quantize"
TAG_EXPORT_ERROR = "mobitune.tflite.error"


def weights_type(quantize: str) -> str:
    """The number type of the weights: `float32` for `none`, else the quantization."""
    return "float32" if quantize == "none" else quantize


def artifact_name(quantize: str) -> str:
    """The file name an export is logged under (in the run's `tflite/` folder)."""
    return f"model_{weights_type(quantize)}.tflite"


def check_quantize(quantize: str, key: str = "--quantize") -> str:
    """`quantize` if it is one of QUANTIZATIONS, else a ConfigError naming `key`."""
    if quantize not in QUANTIZATIONS:
        raise ConfigError(key, quantize, f"one of {list(QUANTIZATIONS)}")
    return quantize


@dataclass
class ExportResult:
    """What an export wrote and measured."""

    quantize: str
    path: Path
    size_bytes: int
    test_accuracy: float
    latency_ms: float
    test_images: int
    calibration_images: int
    keras_size_bytes: int | None
    keras_test_accuracy: float
    keras_latency_ms: float | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    data_note: str | None = None

    @property
    def size_ratio(self) -> float | None:
        """TFLite size over Keras size (None when the Keras size is unknown)."""
        if not self.keras_size_bytes:
            return None
        return self.size_bytes / self.keras_size_bytes

    def metrics(self) -> dict[str, float]:
        """The metrics logged to the run."""
        mode = weights_type(self.quantize)
        values = {
            "size_bytes": float(self.size_bytes),
            "test_accuracy": float(self.test_accuracy),
            "latency_ms": float(self.latency_ms),
        }
        logged = {f"tflite.{key}": value for key, value in values.items()}
        logged.update({f"tflite.{mode}.{key}": value for key, value in values.items()})
        logged["tflite.keras_test_accuracy"] = float(self.keras_test_accuracy)
        if self.keras_size_bytes:
            logged["tflite.keras_size_bytes"] = float(self.keras_size_bytes)
        return logged


def calibration_sample(images: np.ndarray, count: int, seed: int = CALIBRATION_SEED):
    """A seeded random sample of at most `count` images (all classes, repeatable)."""
    if count < 1:
        raise MobituneError(f"--calibration-images must be at least 1, not {count}.")
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return images[np.sort(order)]


def convert(
    model: keras.Model, quantize: str, calibration_images: np.ndarray | None = None
) -> bytes:
    """The TFLite flatbuffer of `model` (float32 input and output), quantized as asked.

    Keras 3 models are converted through a SavedModel export (the working path with
    TensorFlow 2.21's converter).
    """
    import tensorflow as tf

    check_quantize(quantize)
    if quantize == "int8" and (calibration_images is None or len(calibration_images) == 0):
        raise MobituneError("An int8 export needs calibration images (training images).")
    with tempfile.TemporaryDirectory(prefix="mobitune-savedmodel-") as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            samples = np.asarray(calibration_images, dtype=np.float32)

            def representative_dataset():
                for image in samples:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            # Full-integer: every op in int8, or the conversion fails (no silent float ops).
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            return bytes(converter.convert())
        except Exception as error:  # noqa: BLE001 - the converter raises many kinds
            raise MobituneError(
                f"TFLite conversion ({quantize}) failed: {type(error).__name__}: {error}"
            ) from error


def make_interpreter(content: bytes, threads: int | None = None) -> Any:
    """A TFLite interpreter for `content`: LiteRT's when installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - a class
    with warnings.catch_warnings():
        # TensorFlow's interpreter warns that it moved to LiteRT; it still works in 2.21.
        warnings.simplefilter("ignore")
        interpreter = Interpreter(
            model_content=content, num_threads=threads or max(1, os.cpu_count() or 1)
        )
    interpreter.allocate_tensors()
    return interpreter


class TFLiteClassifier:
    """Runs a TFLite classifier one image at a time (the way a phone runs it)."""

    def __init__(self, content: bytes, threads: int | None = None) -> None:
        self.interpreter = make_interpreter(content, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def _set_input(self, image: np.ndarray) -> None:
        batch = np.asarray(image, dtype=np.float32)[None]
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):  # a quantized input: scale the pixels
            scale, zero_point = self.input["quantization"]
            batch = np.clip(np.round(batch / scale + zero_point), *_limits(dtype))
        self.interpreter.set_tensor(self.input["index"], batch.astype(dtype))

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities for one (size, size, 3) RGB image."""
        self._set_input(image)
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self.output["index"])[0]
        if np.issubdtype(output.dtype, np.integer):
            scale, zero_point = self.output["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return np.asarray(output, dtype=np.float64)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) for RGB images (N, size, size, 3)."""
        return np.stack([self.predict_one(image) for image in images])

    def latency_ms(self, image: np.ndarray, repeats: int = LATENCY_REPEATS) -> float:
        """Mean CPU latency of one single-image inference, in milliseconds."""
        self._set_input(image)
        for _ in range(LATENCY_WARMUP):
            self.interpreter.invoke()
        started = time.perf_counter()
        for _ in range(repeats):
            self.interpreter.invoke()
        return (time.perf_counter() - started) / repeats * 1000.0


def _limits(dtype: Any) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def keras_file_size(model: keras.Model) -> int:
    """Size in bytes of `model` saved in Keras' own `.keras` format."""
    with tempfile.TemporaryDirectory(prefix="mobitune-keras-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.stat().st_size


def keras_predict(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of a Keras pixels-in model, in batches."""
    batches = [
        np.asarray(
            model(np.asarray(images[start : start + batch_size], np.float32), training=False)
        )
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose most probable class is the label."""
    return float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels)))


def export_model(
    model: keras.Model,
    quantize: str,
    output: Path,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    train_images: np.ndarray | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    keras_size_bytes: int | None = None,
) -> ExportResult:
    """Convert `model` (a pixels-in serving model), write it to `output`, evaluate it.

    The TFLite model and the Keras model are both evaluated on `test_images`.
    """
    from mobitune.training import measure_latency_ms

    check_quantize(quantize)
    calibration = None
    if quantize == "int8":
        if train_images is None or len(train_images) == 0:
            raise MobituneError("An int8 export needs the run's training images to calibrate.")
        calibration = calibration_sample(train_images, calibration_images)
    content = convert(model, quantize, calibration)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(content)
    classifier = TFLiteClassifier(content)
    tflite_probabilities = classifier.predict(test_images)
    keras_probabilities = keras_predict(model, test_images)
    return ExportResult(
        quantize=quantize,
        path=output,
        size_bytes=len(content),
        test_accuracy=accuracy(tflite_probabilities, test_labels),
        latency_ms=classifier.latency_ms(test_images[0]),
        test_images=len(test_images),
        calibration_images=0 if calibration is None else len(calibration),
        keras_size_bytes=keras_size_bytes or keras_file_size(model),
        keras_test_accuracy=accuracy(keras_probabilities, test_labels),
        keras_latency_ms=measure_latency_ms(model, test_images[0]),
    )


def log_result(result: ExportResult, run_id: str, tracking_uri: str) -> ExportResult:
    """Log the file and the metrics of an export to run `run_id` (finished or active)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    name = artifact_name(result.quantize)
    with tempfile.TemporaryDirectory(prefix="mobitune-tflite-") as folder:
        # Logged under a fixed name, whatever the local file is called.
        staged = Path(folder) / name
        staged.write_bytes(result.path.read_bytes())
        client.log_artifact(run_id, str(staged), artifact_path=ARTIFACT_FOLDER)
    timestamp = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            mlflow.entities.Metric(key, value, timestamp, 0)
            for key, value in result.metrics().items()
        ],
        tags=[mlflow.entities.RunTag(TAG_QUANTIZE, result.quantize)],
    )
    result.run_id = run_id
    result.artifact_path = f"{ARTIFACT_FOLDER}/{name}"
    return result


def _data_note(run: Any, layout: Any) -> str | None:
    from mobitune.tracking import TAG_DATA_FINGERPRINT

    logged = run.data.tags.get(TAG_DATA_FINGERPRINT)
    current = layout.fingerprint()
    if logged and logged != current:
        return (
            f"The dataset at {layout.root} differs from the one run {run.info.run_id} trained "
            f"on (fingerprint {current}, the run logged {logged}): both models are evaluated "
            "on the images there now."
        )
    return None


def default_output(run_id: str, quantize: str) -> Path:
    """`./mobitune-<run id prefix>-<weights type>.tflite` in the current folder."""
    return Path.cwd() / f"mobitune-{run_id[:8]}-{weights_type(quantize)}.tflite"


def export_run(
    run_id: str,
    quantize: str = "none",
    output: str | Path | None = None,
    tracking_uri: str | None = None,
    data_root: str | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    export_format: str = "tflite",
) -> ExportResult:
    """Export run `run_id`'s logged model, evaluate it on the run's test split, log it back.

    The dataset is the one the run's logged config names (`data_root` if it moved);
    int8 calibrates with a seeded sample of its training split.
    """
    from omegaconf import OmegaConf, open_dict

    from mobitune import data as data_module
    from mobitune.predict import load_model
    from mobitune.registry import MODEL_ARTIFACT, open_store

    if export_format not in FORMATS:
        raise ConfigError("--format", export_format, f"one of {list(FORMATS)}")
    check_quantize(quantize)
    store = open_store(tracking_uri)
    run = store.get_run(run_id)
    cfg = store.load_config(run)
    if data_root:
        with open_dict(cfg):
            OmegaConf.update(cfg, "data.root", str(data_root))
    loaded_model = load_model(f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}", store.uri)
    with open_dict(cfg):
        # Decode at the model's own input size, as training did.
        OmegaConf.update(cfg, "data.image_size", loaded_model.image_size)
    try:
        dataset = data_module.load_data(cfg.data)
    except MobituneError as error:
        raise MobituneError(
            f"{error} (Exporting run {run.info.run_id} needs the dataset it trained on; "
            "`--data-root PATH` points at it if it moved.)"
        ) from error
    _check_classes(dataset, loaded_model.class_names, run.info.run_id)
    test = dataset.arrays["test"]
    result = export_model(
        loaded_model.model,
        quantize,
        Path(output) if output else default_output(run.info.run_id, quantize),
        test.images,
        test.labels,
        train_images=dataset.arrays["train"].images,
        calibration_images=calibration_images,
        keras_size_bytes=loaded_model.keras_file_bytes,
    )
    result.data_note = _data_note(run, dataset.layout)
    return log_result(result, run.info.run_id, store.uri)


def _check_classes(dataset: LoadedData, class_names: list[str], run_id: str) -> None:
    if list(dataset.class_names) != list(class_names):
        raise MobituneError(
            f"The dataset at {dataset.layout.root} has classes {dataset.class_names}, but run "
            f"{run_id}'s model predicts {class_names}: its test accuracy would be meaningless. "
            "Point `--data-root` at the dataset the run trained on."
        )


def export_settings(cfg: Any) -> tuple[bool, str, int]:
    """(enabled, quantize, calibration images) of the `export.tflite` config; validated."""
    section = (cfg.get("export") or {}).get("tflite") if hasattr(cfg, "get") else None
    if not section:
        return False, "float16", DEFAULT_CALIBRATION_IMAGES
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("export.tflite.enabled", enabled, "true or false")
    quantize = str(section.get("quantize", "float16"))
    check_quantize(quantize, "export.tflite.quantize")
    count = section.get("calibration_images", DEFAULT_CALIBRATION_IMAGES)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(
            "export.tflite.calibration_images", count, "a positive integer (training images)"
        )
    return enabled, quantize, count


def validate_export_config(cfg: Any) -> None:
    """Check the `export` config group before training starts (raise ConfigError)."""
    export_settings(cfg)


def export_at_end_of_run(
    cfg: Any, model: keras.Model, loaded: LoadedData, run_id: str, output_dir: Path
) -> ExportResult | None:
    """With `export.tflite.enabled`, export the just-trained serving model and log it.

    A failed export does not fail the trained run: it is logged as a warning and the
    `mobitune.tflite.error` tag.
    """
    enabled, quantize, count = export_settings(cfg)
    if not enabled:
        return None
    import mlflow

    uri = str(cfg.tracking.uri)
    try:
        result = export_model(
            model,
            quantize,
            Path(output_dir) / artifact_name(quantize),
            loaded.arrays["test"].images,
            loaded.arrays["test"].labels,
            train_images=loaded.arrays["train"].images,
            calibration_images=count,
        )
        result = log_result(result, run_id, uri)
    except Exception as error:  # noqa: BLE001 - the trained run stays valid
        log.warning("The %s TFLite export at the end of the run failed: %s", quantize, error)
        with contextlib.suppress(Exception):
            mlflow.MlflowClient(tracking_uri=uri).set_tag(
                run_id, TAG_EXPORT_ERROR, f"{type(error).__name__}: {error}"[:5000]
            )
        return None
    log.info(
        "TFLite %s export: %d bytes, test accuracy %.4f, %.2f ms per image",
        quantize,
        result.size_bytes,
        result.test_accuracy,
        result.latency_ms,
    )
    return result
