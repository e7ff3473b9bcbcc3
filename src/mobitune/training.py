"""Keras training: seeding, compiling, fitting and predicting for one run.

When the frozen-feature cache applies (see `feature_cache`), the trainable tail of the
model is fitted on cached frozen features instead of the full model on images; the tail
shares its layers with the full model, so the full model ends up trained either way,
with the same metrics.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mobitune.augmentation import augmentation_spec, make_augmenter
from mobitune.data import LoadedData, make_dataset
from mobitune.feature_cache import CacheDecision, feature_dataset, prepare_features

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Per-epoch history, test-split probabilities and how long training took.

    `train_seconds` includes computing or loading cached features.
    """

    history: dict[str, list[float]]
    test_probabilities: np.ndarray
    train_seconds: float


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TF ops repeatable."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_optimizer(optimizer_cfg: Any) -> keras.optimizers.Optimizer:
    """The optimizer named by the `optimizer` config group."""
    import keras

    name = str(optimizer_cfg.name).lower()
    learning_rate = float(optimizer_cfg.learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=float(optimizer_cfg.get("momentum", 0.0))
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}")  # settings.validate_run_config caught it


def compile_model(model: keras.Model, optimizer_cfg: Any) -> None:
    """Categorical cross-entropy and accuracy, as the seed compiles it.

    XLA is off: on a CPU it made a MobileNet train step 3.5x slower.
    """
    _compile_with(model, make_optimizer(optimizer_cfg))


def _compile_with(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )


def fit_and_predict(
    model: keras.Model,
    data: LoadedData,
    cfg: Any,
    callbacks: list[keras.callbacks.Callback],
) -> FitResult:
    """Train on the training split, validate each epoch, then predict the unshuffled test split.

    With the feature cache, the model's trainable tail is fitted on cached features of
    its frozen part (same batches, same order, same metrics); `callbacks` then see the
    tail as their `model`, and `model.stop_training` on it stops training as usual.
    """
    num_classes = data.num_classes
    batch_size = int(cfg.data.batch_size)
    shuffle_seed = int(cfg.data.shuffle_seed)
    augmentation = augmentation_spec(cfg.data, default_seed=int(cfg.trainer.seed))
    started = time.perf_counter()
    decision = prepare_features(model, data, cfg, augmentation_enabled=augmentation.enabled)
    log_cache_decision(decision)
    if decision.features is not None:
        features = decision.features.arrays
        trained = decision.features.split.tail
        datasets = {
            split: feature_dataset(
                features[split],
                data.arrays[split].labels,
                num_classes,
                batch_size,
                shuffle=split == "train",
                seed=shuffle_seed if split == "train" else None,
            )
            for split in ("train", "valid", "test")
        }
    else:
        trained = model
        datasets = {
            "train": make_dataset(
                data.arrays["train"],
                num_classes,
                batch_size,
                shuffle=True,
                seed=shuffle_seed,
                augment=make_augmenter(augmentation),
            ),
            "valid": make_dataset(data.arrays["valid"], num_classes, batch_size, shuffle=False),
            "test": make_dataset(data.arrays["test"], num_classes, batch_size, shuffle=False),
        }
    compile_model(trained, cfg.optimizer)
    history = trained.fit(
        datasets["train"],
        validation_data=datasets["valid"],
        epochs=int(cfg.trainer.epochs),
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=int(cfg.trainer.verbose),
        callbacks=callbacks,
    )
    train_seconds = time.perf_counter() - started
    probabilities = trained.predict(datasets["test"], verbose=0)
    if trained is not model:
        # The full model holds the trained layers already; give it the optimizer (and its
        # state) too, so it looks exactly as if it had been fitted itself.
        _compile_with(model, trained.optimizer)
    return FitResult(
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        test_probabilities=np.asarray(probabilities),
        train_seconds=train_seconds,
    )


def log_cache_decision(decision: CacheDecision) -> None:
    """Record in the active MLflow run (if any) whether and how the feature cache was used.

    Params `cache.used`, `cache.status` (hit, built, memory or off), `cache.reason`,
    `cache.key`; metrics `cache.hit` (1 or 0) and `cache.feature_seconds` (computing or
    loading the features).
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or mlflow.active_run() is None:
        return
    summary = decision.summary()
    params = {
        "cache.used": str(decision.used).lower(),
        "cache.status": summary.get("status", "off"),
        "cache.reason": decision.reason[:500],
    }
    metrics = {"cache.hit": 1.0 if summary.get("hit") else 0.0}
    if decision.features is not None:
        params["cache.key"] = decision.features.key
        params["cache.stored_dtype"] = decision.features.stored_dtype
        metrics["cache.feature_seconds"] = decision.features.seconds
        metrics["cache.size_mb"] = decision.features.size_bytes / 1024**2
    mlflow.log_params(params)
    mlflow.log_metrics(metrics)


def measure_latency_ms(model: keras.Model, image: np.ndarray, repeats: int = 20) -> float:
    """Mean CPU latency of one single-image forward pass, in milliseconds.

    Timed as a compiled graph (as `predict` and serving run it): calling the model directly
    runs it eagerly, layer by layer, and would mostly time Python.
    """
    import tensorflow as tf

    forward = tf.function(lambda inputs: model(inputs, training=False))
    batch = tf.constant(np.asarray(image, dtype=np.float32)[None])
    for _ in range(3):  # warm up: the first call traces the graph
        forward(batch).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        forward(batch).numpy()
    return (time.perf_counter() - started) / repeats * 1000.0
