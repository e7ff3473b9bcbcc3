"""One tracked training run from a composed config: `train(cfg) -> dict of metrics`."""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mobitune import augmentation, export, feature_cache, plots, tracking
from mobitune import data as data_module
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
from mobitune.settings import EPOCH_METRICS, validate_objective, validate_run_config
from mobitune.study import (
    TAG_PRUNED,
    TAG_PRUNED_AT_EPOCH,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TrialLink,
    parent_watchdog,
)
from mobitune.training import fit_and_predict, measure_latency_ms, seed_everything

log = logging.getLogger(__name__)


def hydra_output_dir() -> Path | None:
    """The Hydra job folder, or None when not running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def parallel_jobs() -> int:
    """How many jobs of this multirun run at once on this machine (1 outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().get("launcher") or {}
    try:
        return max(1, int(launcher.get("n_jobs", 1) or 1))
    except (TypeError, ValueError):
        return 1


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
    export.validate_export_config(cfg)
    feature_cache.cache_settings(cfg)
    augmentation.augmentation_spec(cfg.data)
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fine-tune MobileNet as `cfg` describes; track everything in MLflow; return final metrics.

    Returns the last epoch's loss/accuracy/val_loss/val_accuracy, test_loss,
    test_accuracy, latency_ms, the parameter counts and `objective` (the value the
    sweeper optimises; a tuple for several objectives) and, for a sweep trial its pruner
    stopped, `pruned_at_epoch`.
    Raises MobituneError (a clear message) for bad configs or data.
    """
    register_resolvers()
    in_sweep = (cfg.get("study") or {}).get("trial_number") is not None
    with ExitStack() as stack:
        output_dir = hydra_output_dir()
        if output_dir is None:
            output_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mobitune-")))
        output_dir.mkdir(parents=True, exist_ok=True)
        resolved = resolve_config(cfg, output_dir)
        uri = str(resolved.tracking.uri)
        link = None
        try:
            link = TrialLink.from_config(resolved)
            if link is not None:
                link.open()
            layout, spec = preflight(resolved)
        except MobituneError as error:
            if in_sweep:  # a sweep trial is recorded even when its config is bad
                _record_failed_run(resolved, error, link)
            raise
        return _tracked_training(resolved, layout, spec, output_dir, uri, link)


def _run_tags(cfg: DictConfig) -> dict[str, str]:
    tags = tracking.source_tags(Path(str(cfg.paths.root_dir)))
    study_cfg = cfg.get("study") or {}
    if study_cfg.get("trial_number") is not None:
        tags.update(
            {TAG_STUDY: str(study_cfg.get("name")), TAG_TRIAL_NUMBER: str(study_cfg.trial_number)}
        )
    tags.update({str(key): str(value) for key, value in (cfg.tracking.get("tags") or {}).items()})
    return tags


def _run_name(cfg: DictConfig) -> str | None:
    """The configured run name; a sweep trial defaults to `<study>-trial-<number>`."""
    study_cfg = cfg.get("study") or {}
    if cfg.tracking.run_name is None and study_cfg.get("trial_number") is not None:
        return f"{study_cfg.get('name')}-trial-{study_cfg.trial_number}"
    return cfg.tracking.run_name


def _record_failed_run(cfg: DictConfig, error: BaseException, link: TrialLink | None) -> None:
    """Record a run that failed before training started: FAILED, with its config and error.

    Best effort: when the store itself fails, say so, but the error the user must read is
    `error` (the caller raises it), not the store's.
    """
    try:
        tracking.prepare_experiment(
            str(cfg.tracking.uri), str(cfg.tracking.experiment), cfg.tracking.artifact_location
        )
        with tracking.tracked_run(
            _run_name(cfg), _run_tags(cfg), cfg.tracking.get("parent_run_id")
        ) as run:
            if link is not None:
                link.attach_run(run.info.run_id)
            tracking.log_params(tracking.flatten_config(OmegaConf.to_container(cfg)))
            raise error  # tracked_run records it and ends the run FAILED
    except Exception as raised:
        if raised is not error:
            log.warning("Could not record the failed trial in MLflow: %s", raised)


def _orphaned(run_id: str) -> None:
    """The sweeper that launched this job died: record the run as failed and stop."""
    import mlflow

    log.error("The sweep process that launched this trial died: stopping it")
    client = mlflow.MlflowClient()
    client.set_tag(run_id, tracking.TAG_ERROR, "The sweep process that launched this trial died.")
    client.set_terminated(run_id, status="FAILED")
    os._exit(1)


def _tracked_training(
    cfg: DictConfig,
    layout: data_module.DatasetLayout,
    spec: ModelSpec,
    output_dir: Path,
    uri: str,
    link: TrialLink | None,
) -> dict[str, float]:
    import keras
    import mlflow

    tracking.prepare_experiment(uri, str(cfg.tracking.experiment), cfg.tracking.artifact_location)
    tags = _run_tags(cfg)
    tags.update(tracking.dataset_tags(layout.fingerprint()))
    with ExitStack() as stack:
        run = stack.enter_context(
            tracking.tracked_run(_run_name(cfg), tags, cfg.tracking.get("parent_run_id"))
        )
        log.info("MLflow run %s in %s", run.info.run_id, uri)
        if link is not None:
            link.attach_run(run.info.run_id)
            if cfg.study.get("sweeper_pid") != os.getpid():  # not the sweeper's own process
                stack.enter_context(parent_watchdog(functools.partial(_orphaned, run.info.run_id)))
        tracking.log_params(tracking.flatten_config(OmegaConf.to_container(cfg)))
        _log_text(OmegaConf.to_yaml(cfg), "config.yaml", output_dir)
        _log_text(OmegaConf.to_yaml(hydra_overrides()), "overrides.yaml", output_dir)

        configure_threads(parallel_jobs())
        try:
            # One decoding pass: unreadable files are skipped and merged into the report.
            loaded = data_module.load_data(cfg.data, layout)
        except MobituneError as error:
            report = getattr(error, "report", None)  # datacheck.UnusableDatasetError
            if report is not None:  # nothing usable left: keep the report with the failed run
                _log_text(report.to_json(), "data_report.json", output_dir)
            raise
        sizes = data_module.split_sizes(loaded)
        data_counts = {
            "data.skipped_files": len(loaded.skipped),
            "data.converted_images": loaded.report.count("converted"),
            "data.warnings": loaded.report.count("warning"),
        }
        tracking.log_params(
            {
                "data.num_classes": loaded.num_classes,
                "data.class_names": json.dumps(loaded.class_names),
                "data.train_size": sizes["train"],
                "data.valid_size": sizes["valid"],
                "data.test_size": sizes["test"],
                **data_counts,
            }
        )
        mlflow.log_metrics(data_counts)
        # Skipped files with reasons, converted images with counts, warnings, sizes, modes.
        _log_text(loaded.report.to_json(), "data_report.json", output_dir)

        keras.backend.clear_session()  # nothing left over from an earlier trial in this process
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
        if link is not None and link.pruning_enabled:
            callbacks.append(link.pruning_callback())
        fitted = fit_and_predict(model, loaded, cfg, callbacks)
        pruned_at_epoch = link.pruned_at_epoch if link is not None else None
        if pruned_at_epoch is not None:
            mlflow.set_tags({TAG_PRUNED: "true", TAG_PRUNED_AT_EPOCH: str(pruned_at_epoch)})

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
        # A pruned trial keeps its metrics and plots; its model is not worth the disk.
        if bool(cfg.tracking.log_model) and pruned_at_epoch is None:
            tracking.log_keras_model(served, example, loaded.class_names)
        if pruned_at_epoch is None:  # with export.tflite.enabled: TFLite file and metrics
            export.export_at_end_of_run(cfg, served, loaded, run.info.run_id, output_dir)

        metrics["objective"] = objective_value(metrics, fitted.history, cfg)
        if pruned_at_epoch is not None:
            metrics["pruned_at_epoch"] = pruned_at_epoch
        log.info(
            "Finished: val_accuracy=%.4f test_accuracy=%.4f (%.1f s training)",
            metrics.get("val_accuracy", float("nan")),
            evaluation.accuracy,
            fitted.train_seconds,
        )
        return metrics
