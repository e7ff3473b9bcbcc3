"""`mobitune export`: TFLite models for phones, evaluated on the test split and logged."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import compose_run_config, tracking_uri_of, write_dataset
from mobitune.cli import main
from mobitune.errors import MobituneError
from mobitune.export import TFLiteClassifier, export_run

# A tiny model that learns the generated shapes in 3 epochs. At 64 px, MobileNet's
# width 1.0 cut after block 2 has 112k weights (98k in the head): enough that a file's
# size is mostly weights, not format overheads, so the int8 size comparison means something.
LEARNING = (
    "data.image_size=64",
    "model.alpha=1.0",
    "model.cut_layer=conv_pw_2_relu",
    "model.trainable_layers=all",
    "model.freeze_batchnorm=true",
    "optimizer.learning_rate=1e-2",
    "trainer.epochs=3",
)


def only_run(uri: str):
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mobitune").experiment_id])
    return client, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tracked run that learnt, on a dataset with 30 test images.

    It exports float16 at its end (`export.tflite.enabled`); what that logged is kept
    before the tests export more.
    """
    from mobitune.train import train

    root = tmp_path_factory.mktemp("export")
    dataset = write_dataset(root / "dataset", counts={"train": 10, "valid": 4, "test": 10}, size=64)
    train(compose_run_config(root, dataset, *LEARNING, "export.tflite.enabled=true"))
    uri = tracking_uri_of(root)
    client, run = only_run(uri)
    return {
        "root": root,
        "uri": uri,
        "run_id": run.info.run_id,
        "dataset": dataset,
        "end_of_run": run,
        "end_of_run_artifacts": {
            item.path for item in client.list_artifacts(run.info.run_id, "tflite")
        },
    }


def logged_keras_file_size(trained: dict, folder: Path) -> int:
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{trained['run_id']}/model",
        dst_path=str(folder),
        tracking_uri=trained["uri"],
    )
    (keras_file,) = Path(local).rglob("*.keras")
    return keras_file.stat().st_size


def test_int8_export_is_a_third_of_the_size_and_as_accurate(
    trained: dict, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "shapes_int8.tflite"
    code = main(
        [
            "export",
            trained["run_id"],
            "--format",
            "tflite",
            "--quantize",
            "int8",
            "--output",
            str(output),
            "--tracking-uri",
            trained["uri"],
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "TFLite int8" in printed and "calibrated with 30 training images" in printed

    client, run = only_run(trained["uri"])
    metrics = run.data.metrics
    keras_size = logged_keras_file_size(trained, tmp_path / "model")
    assert metrics["tflite.keras_size_bytes"] == keras_size
    assert metrics["tflite.size_bytes"] == output.stat().st_size
    assert metrics["tflite.size_bytes"] * 3 <= keras_size
    # Not just the Keras format's overheads: a third of the float32 weights themselves.
    assert metrics["tflite.size_bytes"] * 3 <= 4 * int(run.data.params["model.total_params"])
    # The same 30 test images as the run's own evaluation of the Keras model.
    assert run.data.metrics["test_accuracy"] >= 0.9
    assert metrics["tflite.keras_test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert abs(metrics["tflite.test_accuracy"] - metrics["test_accuracy"]) <= 0.02
    assert metrics["tflite.latency_ms"] > 0
    assert metrics["tflite.int8.size_bytes"] == metrics["tflite.size_bytes"]
    assert run.data.tags["mobitune.tflite.quantize"] == "int8"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "tflite")}
    assert "tflite/model_int8.tflite" in artifacts

    # Full-integer: the weights are int8, only the pixels in and probabilities out are float.
    classifier = TFLiteClassifier(output.read_bytes())
    dtypes = {detail["dtype"] for detail in classifier.interpreter.get_tensor_details()}
    assert np.int8 in dtypes
    assert classifier.input["dtype"] == np.float32 and classifier.output["dtype"] == np.float32


def test_float32_and_float16_exports(trained: dict, tmp_path: Path) -> None:
    full = export_run(trained["run_id"], "none", tmp_path / "a.tflite", trained["uri"])
    half = export_run(trained["run_id"], "float16", tmp_path / "b.tflite", trained["uri"])
    assert full.keras_size_bytes and half.size_bytes < 0.6 * full.size_bytes
    assert full.test_accuracy == full.keras_test_accuracy
    assert half.test_accuracy == half.keras_test_accuracy
    assert full.calibration_images == half.calibration_images == 0
    _, run = only_run(trained["uri"])
    assert run.data.metrics["tflite.float32.size_bytes"] == full.size_bytes
    assert run.data.metrics["tflite.float16.size_bytes"] == half.size_bytes
    assert run.data.metrics["tflite.size_bytes"] == half.size_bytes  # the latest export


def test_export_reads_a_moved_dataset_and_refuses_other_classes(
    trained: dict, tmp_path: Path, capsys
) -> None:
    other = write_dataset(tmp_path / "other", counts={"train": 2, "valid": 1, "test": 1},
                          classes=("circle", "square"))  # fmt: skip
    arguments = ["--tracking-uri", trained["uri"], "-o", str(tmp_path / "x.tflite")]
    code = main(["export", trained["run_id"], "--data-root", str(other), *arguments])
    error = capsys.readouterr().err
    assert code == 2 and "has classes ['circle', 'square']" in error
    code = main(["export", trained["run_id"], "--data-root", str(tmp_path / "gone"), *arguments])
    error = capsys.readouterr().err
    assert code == 2 and "--data-root" in error and "Traceback" not in error


def test_training_can_export_float16_at_the_end_of_every_run(trained: dict) -> None:
    run = trained["end_of_run"]
    assert run.info.status == "FINISHED"
    assert "mobitune.tflite.error" not in run.data.tags
    metrics = run.data.metrics
    assert metrics["tflite.float16.size_bytes"] == metrics["tflite.size_bytes"] > 0
    assert metrics["tflite.size_bytes"] < metrics["tflite.keras_size_bytes"] * 0.6
    assert metrics["tflite.test_accuracy"] == metrics["test_accuracy"]
    assert run.data.tags["mobitune.tflite.quantize"] == "float16"
    assert trained["end_of_run_artifacts"] == {"tflite/model_float16.tflite"}


def test_export_is_off_by_default(compose_config) -> None:
    cfg = compose_config()
    assert cfg.export.tflite.enabled is False
    assert cfg.export.tflite.quantize == "float16"


def test_a_bad_export_option_stops_training_before_it_starts(
    compose_config, tmp_path: Path
) -> None:
    from mobitune.train import train

    with pytest.raises(MobituneError, match="export.tflite.quantize"):
        train(compose_config("export.tflite.enabled=true", "export.tflite.quantize=int4"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
