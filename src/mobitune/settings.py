"""Validation of the run config groups that are not the model's (see model.py for those)."""

from __future__ import annotations

from typing import Any

from mobitune.errors import ConfigError

OPTIMIZERS = ("adam", "sgd", "rmsprop")
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
FINAL_METRICS = (
    "test_loss",
    "test_accuracy",
    "latency_ms",
    "model.trainable_params",
    "model.total_params",
)
OBJECTIVE_METRICS = EPOCH_METRICS + FINAL_METRICS
MODES = ("max", "min")
REDUCTIONS = ("last", "best")


def _integer(key: str, value: Any, expected: str, minimum: int | None) -> int:
    try:
        number = int(value)
        if number != float(value) or isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(key, value, expected) from None
    if minimum is not None and number < minimum:
        raise ConfigError(key, value, expected)
    return number


def positive_int(key: str, value: Any, expected: str) -> int:
    """`value` as an integer >= 1; ConfigError naming `key` otherwise."""
    return _integer(key, value, expected, minimum=1)


def finite_number(key: str, value: Any, expected: str) -> float:
    """`value` as a float; ConfigError naming `key` when it is not a finite number."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, value, expected) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(key, value, expected)
    return number


def as_list(value: Any) -> list[Any]:
    """A config value that may be one item or a list of items, as a list."""
    if isinstance(value, list | tuple):
        return list(value)
    if hasattr(value, "__iter__") and not isinstance(value, str | bytes):
        return list(value)
    return [value]


def validate_objective(objective_cfg: Any) -> tuple[list[str], list[str]]:
    """Check `objective.metric` / `objective.mode` (one each, or equal-length lists)."""
    metrics = [str(metric) for metric in as_list(objective_cfg.metric)]
    modes = [str(mode) for mode in as_list(objective_cfg.mode)]
    for metric in metrics:
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(
                "objective.metric",
                metric,
                f"one of {list(OBJECTIVE_METRICS)}",
                "It names the metric `train` returns to the sweeper.",
            )
    if len(modes) == 1 and len(metrics) > 1:
        modes = modes * len(metrics)
    if len(modes) != len(metrics):
        raise ConfigError(
            "objective.mode",
            objective_cfg.mode,
            f"one mode or {len(metrics)} modes (one per metric)",
        )
    for mode in modes:
        if mode not in MODES:
            raise ConfigError("objective.mode", mode, f"one of {list(MODES)}")
    reduce = str(objective_cfg.get("reduce", "last"))
    if reduce not in REDUCTIONS:
        raise ConfigError("objective.reduce", reduce, f"one of {list(REDUCTIONS)}")
    return metrics, modes


def validate_run_config(cfg: Any) -> None:
    """Check trainer, optimizer, data batch size and objective; raise ConfigError if wrong."""
    positive_int("trainer.epochs", cfg.trainer.epochs, "a positive integer (number of epochs)")
    positive_int("data.batch_size", cfg.data.batch_size, "a positive integer")
    positive_int("data.image_size", cfg.data.image_size, "a positive integer (pixels)")
    _validate_data_settings(cfg.data)
    name = str(cfg.optimizer.name).lower()
    if name not in OPTIMIZERS:
        raise ConfigError("optimizer.name", cfg.optimizer.name, f"one of {list(OPTIMIZERS)}")
    try:
        learning_rate = float(cfg.optimizer.learning_rate)
    except (TypeError, ValueError):
        raise ConfigError(
            "optimizer.learning_rate", cfg.optimizer.learning_rate, "a positive number, e.g. 1e-4"
        ) from None
    if not learning_rate > 0 or learning_rate != learning_rate:
        raise ConfigError(
            "optimizer.learning_rate",
            cfg.optimizer.learning_rate,
            "a positive number, e.g. 1e-4",
            "The seed uses 1e-4; sweeps search it on a log scale.",
        )
    validate_objective(cfg.objective)


def _validate_data_settings(data_cfg: Any) -> None:
    """The data group's numbers other than sizes: seeds, decoding threads, report limits."""
    _integer("data.shuffle_seed", data_cfg.get("shuffle_seed", 0), "an integer", minimum=None)
    _integer(
        "data.num_workers",
        data_cfg.get("num_workers", 0),
        "an integer >= 0 (0: one per core)",
        minimum=0,
    )
    if data_cfg.get("max_image_pixels") is not None:
        positive_int(
            "data.max_image_pixels", data_cfg.max_image_pixels, "a positive number of pixels"
        )
    if data_cfg.get("large_image_factor") is not None:
        factor = finite_number(
            "data.large_image_factor", data_cfg.large_image_factor, "a number >= 0 (0: off)"
        )
        if factor < 0:
            raise ConfigError(
                "data.large_image_factor", data_cfg.large_image_factor, "a number >= 0 (0: off)"
            )
