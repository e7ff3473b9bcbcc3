"""One tracked training run from a composed config: `train(cfg) -> dict of metrics`."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mobitune import data as data_module
from mobitune import plots, tracking
from mobitune.errors import MobituneError
from mobitune.evaluation import evaluate_predictions
from mobitune.model import (
    ModelSpec,
    build_model,
    configure_threads,
    frozen_boundary,
    parameter_counts,
    serving_model,
    validate_model_config,
)
from mobitune.paths import register_resolvers
from mobitune.settings import EPOCH_METRICS, as_list, validate_objective, validate_run_config
from mobitune.training import fit_and_predict, measure_latency_ms, seed_everything

log = logging.getLogger(__name__)

# Extra Keras callbacks for a run, made once its MLflow run exists (e.g. the sweeper's
# pruning callback): called with (cfg, run_id), returning a list of callbacks.
CallbackFactory = Callable[[DictConfig, str], list]


def hydra_output_dir() -> Path | None:
    """The Hydra job folder, or None when not running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def hydra_overrides() -> list[str]:
    """The overrides of this Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def resolve_config(cfg: DictConfig, output_dir: Path) -> DictConfig:
    """A fully resolved copy of the config, with `paths.output_dir` made concrete."""
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.update(copy, "paths.output_dir", str(output_dir), force_add=True)
    OmegaConf.resolve(copy)
    return copy


def preflight(cfg: DictConfig) -> tuple[data_module.DatasetLayout, ModelSpec]:
    """Every check that needs neither TensorFlow nor decoding: config values, dataset layout."""
    validate_run_config(cfg)
    validate_model_config(cfg.model, int(cfg.data.image_size))
    tracking.validate_tracking_uri(str(cfg.tracking.uri))
    layout = data_module.discover_dataset(cfg.data.root)
    spec = validate_model_config(cfg.model, int(cfg.data.image_size), len(layout.class_names))
    return layout, spec


def objective_value(metrics: dict[str, float], history: dict[str, list[float]], cfg: Any):
    """The value(s) a sweeper optimises: one float, or a tuple for several objectives."""
    names, modes = validate_objective(cfg.objective)
    reduce = str(cfg.objective.get("reduce", "last"))
    values = []
    for name, mode in zip(names, modes, strict=True):
        if name in EPOCH_METRICS and reduce == "best":
            values.append((max if mode == "max" else min)(history[name]))
        else:
            values.append(metrics[name])
    return values[0] if len(values) == 1 else tuple(values)


def _log_text(text: str, name: str, folder: Path) -> None:
    import mlflow

    path = folder / name
    path.write_text(text, encoding="utf-8")
    mlflow.log_artifact(str(path))


def train(
    cfg: DictConfig, callback_factories: list[CallbackFactory] | None = None
) -> dict[str, float]:
    """Fine-tune MobileNet as `cfg` describes; track everything in MLflow; return final metrics.

    Returns the last epoch's loss/accuracy/val_loss/val_accuracy, test_loss,
    test_accuracy, latency_ms, the parameter counts and `objective` (the value the
    sweeper optimises; a tuple for several objectives).
    Raises MobituneError (a clear message) for bad configs or data.
    """
    register_resolvers()
    in_sweep = cfg.get("study", {}).get("trial_number") is not None
    with ExitStack() as stack:
        output_dir = hydra_output_dir()
        if output_dir is None:
            output_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mobitune-")))
        output_dir.mkdir(parents=True, exist_ok=True)
        resolved = resolve_config(cfg, output_dir)
        uri = str(resolved.tracking.uri)
        try:
            layout, spec = preflight(resolved)
        except MobituneError as error:
            if in_sweep:  # a sweep trial is recorded even when its config is bad
                _record_failed_run(resolved, error)
            raise
        return _tracked_training(resolved, layout, spec, output_dir, uri, callback_factories or [])


def _run_tags(cfg: DictConfig) -> dict[str, str]:
    tags = tracking.source_tags(Path(str(cfg.paths.root_dir)))
    tags.update({str(key): str(value) for key, value in (cfg.tracking.get("tags") or {}).items()})
    return tags


def _record_failed_run(cfg: DictConfig, error: BaseException) -> None:
    tracking.prepare_experiment(
        str(cfg.tracking.uri), str(cfg.tracking.experiment), cfg.tracking.artifact_location
    )
    try:
        with tracking.tracked_run(
            cfg.tracking.run_name, _run_tags(cfg), cfg.tracking.get("parent_run_id")
        ):
            tracking.log_params(tracking.flatten_config(OmegaConf.to_container(cfg)))
            raise error
    except type(error):
        pass


def _tracked_training(
    cfg: DictConfig,
    layout: data_module.DatasetLayout,
    spec: ModelSpec,
    output_dir: Path,
    uri: str,
    callback_factories: list[CallbackFactory],
) -> dict[str, float]:
    import mlflow

    tracking.prepare_experiment(uri, str(cfg.tracking.experiment), cfg.tracking.artifact_location)
    tags = _run_tags(cfg)
    tags.update(tracking.dataset_tags(layout.fingerprint()))
    with tracking.tracked_run(
        cfg.tracking.run_name, tags, cfg.tracking.get("parent_run_id")
    ) as run:
        log.info("MLflow run %s in %s", run.info.run_id, uri)
        tracking.log_params(tracking.flatten_config(OmegaConf.to_container(cfg)))
        _log_text(OmegaConf.to_yaml(cfg), "config.yaml", output_dir)
        _log_text(OmegaConf.to_yaml(hydra_overrides()), "overrides.yaml", output_dir)

        configure_threads()
        loaded = data_module.load_data(cfg.data)
        sizes = data_module.split_sizes(loaded)
        tracking.log_params(
            {
                "data.num_classes": loaded.num_classes,
                "data.class_names": json.dumps(loaded.class_names),
                "data.train_size": sizes["train"],
                "data.valid_size": sizes["valid"],
                "data.test_size": sizes["test"],
                "data.skipped_files": len(loaded.skipped),
            }
        )
        mlflow.log_metric("data.skipped_files", len(loaded.skipped))
        _log_text(
            json.dumps(
                {
                    "root": str(layout.root),
                    "class_names": loaded.class_names,
                    "sizes": sizes,
                    "skipped": [
                        {"path": str(item.path), "reason": item.reason} for item in loaded.skipped
                    ],
                },
                indent=2,
            ),
            "data_report.json",
            output_dir,
        )

        seed_everything(int(cfg.trainer.seed), bool(cfg.trainer.deterministic))
        model = build_model(spec)
        counts = parameter_counts(model)
        tracking.log_params(
            {
                "model.total_params": counts["total"],
                "model.trainable_params": counts["trainable"],
                "model.non_trainable_params": counts["non_trainable"],
                "model.frozen_boundary": frozen_boundary(model),
            }
        )
        log.info(
            "Model: %s parameters, %s trainable, %s non-trainable",
            f"{counts['total']:,}",
            f"{counts['trainable']:,}",
            f"{counts['non_trainable']:,}",
        )

        callbacks = [tracking.epoch_logger()]
        for factory in callback_factories:
            callbacks.extend(factory(cfg, run.info.run_id))
        fitted = fit_and_predict(model, loaded, cfg, callbacks)

        test_labels = loaded.arrays["test"].labels
        evaluation = evaluate_predictions(
            fitted.test_probabilities, test_labels, loaded.class_names
        )
        served = serving_model(model)
        example = loaded.arrays["test"].images[:1].astype("float32")
        latency = measure_latency_ms(served, example[0])

        metrics = {
            key: values[-1] for key, values in fitted.history.items() if key in EPOCH_METRICS
        }
        metrics.update(
            {
                "test_loss": evaluation.loss,
                "test_accuracy": evaluation.accuracy,
                "latency_ms": latency,
                "train_seconds": fitted.train_seconds,
                "model.total_params": float(counts["total"]),
                "model.trainable_params": float(counts["trainable"]),
            }
        )
        mlflow.log_metrics(
            {
                "test_loss": evaluation.loss,
                "test_accuracy": evaluation.accuracy,
                "latency_ms": latency,
                "train_seconds": fitted.train_seconds,
            }
        )

        for normalize, name, title in (
            (False, "confusion_matrix.png", "Confusion matrix"),
            (
                True,
                "confusion_matrix_normalized.png",
                "Confusion matrix (normalized by true class)",
            ),
        ):
            path = plots.plot_confusion_matrix(
                evaluation.confusion, loaded.class_names, output_dir / name, normalize, title
            )
            mlflow.log_artifact(str(path))
        mlflow.log_artifact(
            str(plots.plot_learning_curves(fitted.history, output_dir / "learning_curves.png"))
        )
        _log_text(json.dumps(evaluation.report, indent=2), "classification_report.json", output_dir)
        _log_text(evaluation.report_text, "classification_report.txt", output_dir)
        _log_text(
            json.dumps(
                {
                    "class_names": loaded.class_names,
                    "paths": [str(p) for p in loaded.arrays["test"].paths],
                    "labels": test_labels.tolist(),
                    "predicted": evaluation.predicted.tolist(),
                    "probabilities": evaluation.probabilities.round(6).tolist(),
                }
            ),
            "test_predictions.json",
            output_dir,
        )
        if bool(cfg.tracking.log_model):
            tracking.log_keras_model(served, example, loaded.class_names)

        metrics["objective"] = objective_value(metrics, fitted.history, cfg)
        log.info(
            "Finished: val_accuracy=%.4f test_accuracy=%.4f (%.1f s training)",
            metrics.get("val_accuracy", float("nan")),
            evaluation.accuracy,
            fitted.train_seconds,
        )
        return metrics
