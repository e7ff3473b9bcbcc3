"""One tracked training run end to end, asserted on what lands in the MLflow store."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mobitune.errors import ConfigError, MobituneError
from mobitune.tracking import flatten_config, prepare_experiment
from mobitune.train import train


def only_run(uri: str):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("mobitune")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_train_logs_a_complete_run(compose_config, tmp_path: Path) -> None:
    cfg = compose_config("trainer.epochs=2", "model.trainable_layers=5")
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    metrics = train(cfg)

    assert set(metrics) >= {"loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy"}
    assert metrics["objective"] == metrics["val_accuracy"]
    client, run = only_run(uri)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.cut_layer"] == "global_average_pooling2d"
    assert float(params["optimizer.learning_rate"]) == pytest.approx(1e-4)
    assert params["data.num_classes"] == "3"
    assert (params["data.train_size"], params["data.valid_size"], params["data.test_size"]) == (
        "18",
        "9",
        "6",
    )
    assert int(params["model.total_params"]) > int(params["model.trainable_params"]) > 0
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [point.step for point in history] == [0, 1]
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["val_accuracy"] == pytest.approx(metrics["val_accuracy"])

    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "classification_report.json",
        "learning_curves.png",
        "config.yaml",
        "overrides.yaml",
        "data_report.json",
    } <= artifacts
    config_text = Path(
        client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    ).read_text()
    assert "trainable_layers: 5" in config_text and "${" not in config_text

    tags = run.data.tags
    assert tags["mobitune.version"]
    assert len(tags["mobitune.data_fingerprint"]) == 16

    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pixels = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(loaded.predict(pixels))
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert loaded.metadata.metadata["class_names"] == ["circle", "square", "stripes"]
    assert loaded.metadata.signature is not None


def test_failed_run_is_marked_failed_with_the_error(compose_config, tmp_path: Path) -> None:
    # A weights file that is not a weights file: the run starts, then loading fails.
    bogus = tmp_path / "bogus.weights.h5"
    bogus.write_bytes(b"not an hdf5 file")
    cfg = compose_config(f"model.weights={bogus}")
    with pytest.raises(MobituneError, match="Could not load"):
        train(cfg)
    client, run = only_run(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert run.info.status == "FAILED"
    assert "Could not load" in run.data.tags["mobitune.error"]


def test_bad_config_stops_before_any_run(compose_config, tmp_path: Path) -> None:
    cfg = compose_config("trainer.epochs=0")
    with pytest.raises(MobituneError, match="trainer.epochs"):
        train(cfg)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.num_workers=-1", "data.num_workers"),
        ("data.max_image_pixels=0", "data.max_image_pixels"),
        ("data.large_image_factor=-2", "data.large_image_factor"),
        ("data.shuffle_seed=abc", "data.shuffle_seed"),
        ("model.alpha=abc", "model.alpha"),
        ("model.alpha=nan", "model.alpha"),
        ("model.dropout=half", "model.dropout"),
    ],
)
def test_bad_data_and_model_numbers_name_their_key(
    compose_config, tmp_path: Path, override: str, key: str
) -> None:
    cfg = compose_config(override)
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    assert raised.value.key == key
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_objective_metric_name_is_checked(compose_config) -> None:
    cfg = compose_config("objective.metric=val_acc")
    with pytest.raises(MobituneError, match="objective.metric"):
        train(cfg)


def test_flatten_config_uses_dotted_keys() -> None:
    flat = flatten_config({"model": {"cut_layer": "x", "alpha": 0.5}, "tags": {}, "l": [1, 2]})
    assert flat == {"model.cut_layer": "x", "model.alpha": "0.5", "tags": "{}", "l": "[1, 2]"}


def _open_store(uri: str) -> str:
    return prepare_experiment(uri, "mobitune")


def test_new_sqlite_store_opened_by_several_processes_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/concurrent/mlflow.db"
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        experiment_ids = pool.map(_open_store, [uri] * 4)
    assert len(set(experiment_ids)) == 1
    client = mlflow.MlflowClient(uri)
    assert [e.name for e in client.search_experiments()].count("mobitune") == 1
