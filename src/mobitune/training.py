"""Keras training: seeding, compiling, fitting and predicting for one run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mobitune.data import LoadedData, make_dataset

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Per-epoch history, test-split probabilities and how long training took."""

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
    model.compile(
        optimizer=make_optimizer(optimizer_cfg),
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
    """Train on the training split, validate each epoch, then predict the unshuffled test split."""
    num_classes = data.num_classes
    batch_size = int(cfg.data.batch_size)
    train = make_dataset(
        data.arrays["train"], num_classes, batch_size, shuffle=True, seed=int(cfg.data.shuffle_seed)
    )
    valid = make_dataset(data.arrays["valid"], num_classes, batch_size, shuffle=False)
    test = make_dataset(data.arrays["test"], num_classes, batch_size, shuffle=False)
    compile_model(model, cfg.optimizer)
    started = time.perf_counter()
    history = model.fit(
        train,
        validation_data=valid,
        epochs=int(cfg.trainer.epochs),
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=int(cfg.trainer.verbose),
        callbacks=callbacks,
    )
    train_seconds = time.perf_counter() - started
    probabilities = model.predict(test, verbose=0)
    return FitResult(
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        test_probabilities=np.asarray(probabilities),
        train_seconds=train_seconds,
    )


def measure_latency_ms(model: keras.Model, image: np.ndarray, repeats: int = 20) -> float:
    """Mean CPU latency of one single-image forward pass, in milliseconds."""
    batch = np.asarray(image, dtype=np.float32)[None]
    for _ in range(3):  # warm up: the first calls trace the function
        model(batch, training=False)
    started = time.perf_counter()
    for _ in range(repeats):
        model(batch, training=False)
    return (time.perf_counter() - started) / repeats * 1000.0
