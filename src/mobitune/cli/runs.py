"""`mobitune reproduce | predict | register | export`: using the runs a store holds.

Every one of them reads runs from `--tracking-uri`, else `MLFLOW_TRACKING_URI`, else the
project's default store (`tracking.uri` of the config tree).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mobitune.cli.arguments import non_negative_float, positive_int
from mobitune.errors import MobituneError

TRACKING_HELP = (
    "MLflow store to read runs from (default: $MLFLOW_TRACKING_URI, else the project's "
    "store, sqlite:///<project>/mlruns/mlflow.db); a path to a .db file works too"
)


def _quiet_mlflow() -> None:
    """Keep MLflow's progress bars and INFO lines out of a command's output."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", metavar="URI", default=None, help=TRACKING_HELP)


# --- reproduce -------------------------------------------------------------------------


def run_reproduce(parsed: argparse.Namespace) -> int:
    from mobitune.reproduce import format_report, reproduce_run

    _quiet_mlflow()
    reproduction = reproduce_run(
        parsed.run_id,
        parsed.overrides,
        tracking_uri=parsed.tracking_uri,
        tolerance=parsed.tolerance,
        announce=lambda line: print(line, flush=True),
    )
    print(format_report(reproduction))
    return 0 if reproduction.matched else 1


def _add_reproduce(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="train a run again from its logged config and compare the metrics",
        description="Train run RUN_ID again from the config.yaml it logged (Hydra overrides "
        "allowed, e.g. data.root=/new/place or tracking.uri=...; +group=option merges a "
        "config group option), log the new run tagged mobitune.reproduced_from=RUN_ID, and "
        "print each final metric: original, reproduced, difference. The new run goes to the "
        "store the original was read from unless tracking.uri is overridden. Exit status: 0 "
        "when every metric matches within --tolerance (timing metrics are not compared), 1 "
        "when not, 2 for errors.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the MLflow run id to reproduce")
    parser.add_argument(
        "overrides", metavar="OVERRIDE", nargs="*", help="Hydra overrides of the logged config"
    )
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=0.0,
        help="largest absolute difference accepted per metric (default 0: exact, as CPU "
        "training is deterministic)",
    )
    _add_tracking_uri(parser)
    parser.set_defaults(handler=run_reproduce)


# --- predict ---------------------------------------------------------------------------


def run_predict(parsed: argparse.Namespace) -> int:
    from mobitune.predict import (
        FailedImage,
        collect_images,
        format_line,
        iter_predictions,
        load_model,
        output_format,
        write_predictions,
    )

    _quiet_mlflow()
    output = Path(parsed.output) if parsed.output else None
    if output is not None:
        output_format(output)  # a bad extension fails before the model loads
    paths = collect_images(parsed.paths)
    loaded = load_model(parsed.model_uri, parsed.tracking_uri)
    predictions, failed = [], []
    for item in iter_predictions(loaded, paths, parsed.batch_size):
        if isinstance(item, FailedImage):
            failed.append(item)
            print(f"mobitune: skipped {item.path}: {item.reason}", file=sys.stderr)
            continue
        predictions.append(item)
        if output is None:
            print(format_line(item), flush=True)
    if output is not None:
        write_predictions(predictions, failed, loaded.class_names, output, loaded.model_uri)
        print(f"Wrote {len(predictions)} predictions to {output}")
    if failed and not predictions:
        raise MobituneError(f"None of the {len(paths)} files could be read as an image.")
    if failed:
        print(
            f"mobitune: {len(failed)} of {len(paths)} files could not be read as images",
            file=sys.stderr,
        )
    return 0


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict the classes of image files with a logged or registered model",
        description="Predict image files with a model: MODEL_URI is any MLflow model URI "
        "(runs:/RUN_ID/model, models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID), a "
        "logged model id (m-...) or a run id. PATH is image files or folders (searched "
        "recursively). Prints one tab-separated line per image: path, class name, "
        "probability; or writes CSV/JSON with --output. Class names come from the model.",
    )
    parser.add_argument("model_uri", metavar="MODEL_URI")
    parser.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write the predictions to FILE (.csv or .json)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images per batch (default 32)"
    )
    _add_tracking_uri(parser)
    parser.set_defaults(handler=run_predict)


# --- register --------------------------------------------------------------------------


def run_register(parsed: argparse.Namespace) -> int:
    from mobitune.registry import register_model_version

    _quiet_mlflow()
    registered = register_model_version(
        parsed.run_id, parsed.name, alias=parsed.alias, tracking_uri=parsed.tracking_uri
    )
    alias = f" with alias {registered.alias!r}" if registered.alias else ""
    print(
        f"Registered run {registered.run_id}'s model as {registered.name!r} version "
        f"{registered.version}{alias}.\nUse it: mobitune predict {registered.model_uri} IMAGES..."
    )
    return 0


def _add_register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register a run's model in the MLflow model registry",
        description="Register run RUN_ID's logged model as a new version of NAME in the "
        "model registry of the same store; --alias points an alias (e.g. champion) at it, "
        "so models:/NAME@ALIAS names it.",
    )
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default=None, help="alias for the new version, e.g. champion")
    _add_tracking_uri(parser)
    parser.set_defaults(handler=run_register)


# --- export ----------------------------------------------------------------------------


def run_export(parsed: argparse.Namespace) -> int:
    from mobitune.export import export_run, weights_type

    _quiet_mlflow()
    result = export_run(
        parsed.run_id,
        quantize=parsed.quantize,
        output=parsed.output,
        tracking_uri=parsed.tracking_uri,
        data_root=parsed.data_root,
        calibration_images=parsed.calibration_images,
        export_format=parsed.format,
    )
    if result.data_note:
        print(f"mobitune: warning: {result.data_note}", file=sys.stderr)
    ratio = f" ({result.size_ratio:.2f}x)" if result.size_ratio is not None else ""
    keras_size = str(result.keras_size_bytes) if result.keras_size_bytes else "-"
    keras_latency = f"{result.keras_latency_ms:.3f}" if result.keras_latency_ms else "-"
    label = f"TFLite {weights_type(result.quantize)}"
    rows = [
        ("", "Keras", label),
        ("size (bytes)", keras_size, f"{result.size_bytes}{ratio}"),
        (
            f"test accuracy ({result.test_images} images)",
            f"{result.keras_test_accuracy:.4f}",
            f"{result.test_accuracy:.4f}",
        ),
        ("latency (ms per image)", keras_latency, f"{result.latency_ms:.3f}"),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    print(f"Exported run {result.run_id} to {result.path}")
    if result.calibration_images:
        print(f"int8 calibrated with {result.calibration_images} training images")
    for row in rows:
        print(
            "  ".join([row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])])
        )
    print(
        f"Logged to run {result.run_id}: {result.artifact_path} and metrics "
        "tflite.size_bytes, tflite.test_accuracy, tflite.latency_ms"
    )
    return 0


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run's model for mobile (TFLite), evaluate it and log it to the run",
        description="Convert run RUN_ID's model to TFLite (float32 pixels in, probabilities "
        "out), evaluate it and the Keras model on the run's test split, and log the file "
        "and metrics tflite.size_bytes, tflite.test_accuracy, tflite.latency_ms to the run. "
        "int8 is full-integer quantization calibrated with training images.",
    )
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument(
        "--format", choices=["tflite"], default="tflite", help="export format (default tflite)"
    )
    parser.add_argument(
        "--quantize",
        choices=["none", "float16", "int8"],
        default="none",
        help="weights: none (float32), float16, or int8 (default none)",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="where to write the .tflite file (default ./mobitune-<run>-<type>.tflite)",
    )
    parser.add_argument(
        "--data-root",
        metavar="PATH",
        help="the run's dataset, if it moved since training (default: the run's data.root)",
    )
    parser.add_argument(
        "--calibration-images",
        metavar="N",
        type=positive_int,
        default=200,
        help="training images that calibrate int8 (a seeded sample; default 200)",
    )
    _add_tracking_uri(parser)
    parser.set_defaults(handler=run_export)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `reproduce`, `predict`, `register` and `export`."""
    _add_reproduce(subparsers)
    _add_predict(subparsers)
    _add_register(subparsers)
    _add_export(subparsers)
