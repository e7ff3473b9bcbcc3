"""`mobitune reproduce`: a run trained again from its logged config gives identical metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import compose_run_config, run_mobitune, tracking_uri_of
from mobitune.cli import main
from mobitune.registry import open_store
from mobitune.reproduce import TAG_REPRODUCED_FROM, reproduction_config

# A tiny model that learns the generated shapes within 3 epochs (val_accuracy changes from
# epoch to epoch), with frozen layers, so the frozen-feature cache is built by the original
# run and hit by its reproduction.
LEARNING = (
    "model.alpha=1.0",
    "model.cut_layer=conv_pw_2_relu",
    "model.trainable_layers=4",
    "model.freeze_batchnorm=true",
    "optimizer.learning_rate=1e-2",
    "trainer.epochs=3",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """The project folder of this module's runs (a reproduction writes to today's project)."""
    root = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOBITUNE_ROOT", str(root))
        yield root


@pytest.fixture(scope="module")
def original(project: Path, image_dataset: Path) -> dict:
    """One tracked tiny run that learns: its store, run id and dataset."""
    from mobitune.train import train

    root = project
    train(compose_run_config(root, image_dataset, *LEARNING))
    uri = tracking_uri_of(root)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mobitune").experiment_id])
    return {"root": root, "uri": uri, "run_id": run.info.run_id, "dataset": image_dataset}


def history(client: mlflow.MlflowClient, run_id: str, name: str) -> list[float]:
    return [point.value for point in client.get_metric_history(run_id, name)]


def reproductions(client: mlflow.MlflowClient, run_id: str) -> list:
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(
        experiments,
        filter_string=f"tags.`{TAG_REPRODUCED_FROM}` = '{run_id}'",
        order_by=["attributes.start_time DESC"],
    )


def test_reproduce_from_the_command_line_gives_identical_metrics(original: dict) -> None:
    # As a user runs it: a separate process, reading the run back from the store.
    result = run_mobitune(
        "reproduce", original["run_id"], "--tracking-uri", original["uri"], root=original["root"]
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]

    client = mlflow.MlflowClient(original["uri"])
    (new_run,) = reproductions(client, original["run_id"])
    assert new_run.info.status == "FINISHED"
    assert new_run.data.tags[TAG_REPRODUCED_FROM] == original["run_id"]
    old_history = history(client, original["run_id"], "val_accuracy")
    assert len(old_history) == 3 and len(set(old_history)) > 1  # it learnt: not a constant
    assert history(client, new_run.info.run_id, "val_accuracy") == old_history
    assert history(client, new_run.info.run_id, "loss") == history(
        client, original["run_id"], "loss"
    )
    old_run = client.get_run(original["run_id"])
    assert new_run.data.metrics["test_accuracy"] == old_run.data.metrics["test_accuracy"]
    assert new_run.data.metrics["test_loss"] == old_run.data.metrics["test_loss"]
    # The original built the frozen-feature cache; the reproduction used it.
    assert new_run.data.params.get("cache.status") in (None, "hit")

    output = result.stdout
    assert "Reproduced: all" in output and "match exactly" in output
    assert new_run.info.run_id in output
    for name in ("val_accuracy", "test_accuracy", "latency_ms"):
        assert name in output
    assert "not compared (timing)" in output
    assert "Data: the same dataset" in output


def test_a_changed_config_is_reported_with_exit_1(original: dict, capsys) -> None:
    code = main(
        [
            "reproduce",
            original["run_id"],
            "optimizer.learning_rate=0.05",
            "--tracking-uri",
            original["uri"],
        ]
    )
    output = capsys.readouterr().out
    assert code == 1, output
    assert "NOT REPRODUCED" in output and "MISMATCH" in output
    assert "test_loss" in output.split("NOT REPRODUCED")[1]
    client = mlflow.MlflowClient(original["uri"])
    new_run = reproductions(client, original["run_id"])[0]
    assert new_run.data.tags["mobitune.reproduce_overrides"] == "optimizer.learning_rate=0.05"
    assert new_run.data.params["optimizer.learning_rate"] == "0.05"


def test_a_changed_dataset_is_said_clearly(original: dict, tmp_path: Path, capsys) -> None:
    moved = shutil.copytree(original["dataset"], tmp_path / "moved")
    next(iter(sorted((moved / "train" / "circle").iterdir()))).unlink()
    code = main(
        [
            "reproduce",
            original["run_id"],
            f"data.root={moved}",
            "--tracking-uri",
            original["uri"],
        ]
    )
    output = capsys.readouterr().out
    assert code == 1
    assert "DATA DIFFERS" in output and "Data: DIFFERENT dataset" in output


def test_a_sweep_child_run_is_reproduced_as_a_plain_run(original: dict, tmp_path: Path) -> None:
    # A sweep's child: the original run's config and results, with the trial's links set.
    client = mlflow.MlflowClient(original["uri"])
    source = client.get_run(original["run_id"])
    config = yaml.safe_load(
        Path(
            client.download_artifacts(original["run_id"], "config.yaml", str(tmp_path))
        ).read_text()
    )
    parent = client.create_run(source.info.experiment_id, run_name="sweep")
    config["study"]["trial_number"] = 3
    config["tracking"]["parent_run_id"] = parent.info.run_id
    child = client.create_run(
        source.info.experiment_id,
        run_name="trial-3",
        tags={
            **{key: value for key, value in source.data.tags.items() if "mlflow." not in key},
            "mlflow.parentRunId": parent.info.run_id,
        },
    )
    child_id = child.info.run_id
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "config.yaml").write_text(yaml.safe_dump(config))
    client.log_artifact(child_id, str(tmp_path / "child" / "config.yaml"))
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        for point in client.get_metric_history(original["run_id"], name):
            client.log_metric(child_id, name, point.value, step=point.step)
    for name, value in source.data.metrics.items():
        if name not in ("loss", "accuracy", "val_loss", "val_accuracy"):
            client.log_metric(child_id, name, value)
    client.set_terminated(child_id)

    store = open_store(original["uri"])
    cfg = reproduction_config(store, store.get_run(child_id))
    assert cfg.study.trial_number is None and cfg.tracking.parent_run_id is None

    assert main(["reproduce", child_id, "--tracking-uri", original["uri"]]) == 0
    new_run = reproductions(client, child_id)[0]
    assert "mlflow.parentRunId" not in new_run.data.tags
    assert "mobitune.trial_number" not in new_run.data.tags
    logged = yaml.safe_load(
        Path(
            client.download_artifacts(new_run.info.run_id, "config.yaml", str(tmp_path))
        ).read_text()
    )
    assert logged["study"]["trial_number"] is None
    assert logged["tracking"]["parent_run_id"] is None


def test_overrides_use_hydra_grammar_and_the_store_read_from(
    original: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOBITUNE_ROOT", str(tmp_path))  # today's project, not the original's
    store = open_store(original["uri"])
    run = store.get_run(original["run_id"])
    cfg = reproduction_config(store, run, ["+optimizer=sgd", "trainer.epochs=1", "~model.dropout"])
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.trainer.epochs) == ("sgd", 0.9, 1)
    assert "dropout" not in cfg.model
    assert cfg.tracking.uri == original["uri"]
    assert cfg.tracking.tags[TAG_REPRODUCED_FROM] == original["run_id"]
    assert cfg.paths.root_dir == str(tmp_path)
    assert cfg.data.root == str(original["dataset"])
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    cfg = reproduction_config(store, run, [f"tracking.uri={elsewhere}"])
    assert cfg.tracking.uri == elsewhere


def test_keys_added_since_the_run_take_todays_defaults(original: dict, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(original["uri"])
    config = yaml.safe_load(
        Path(
            client.download_artifacts(original["run_id"], "config.yaml", str(tmp_path))
        ).read_text()
    )
    del config["export"]  # as if logged before the export option existed
    del config["data"]["num_workers"]
    old = client.create_run(client.get_experiment_by_name("mobitune").experiment_id)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(config))
    client.log_artifact(old.info.run_id, str(tmp_path / "old" / "config.yaml"))

    store = open_store(original["uri"])
    filled: list[str] = []
    cfg = reproduction_config(store, store.get_run(old.info.run_id), [], filled)
    assert cfg.export.tflite.enabled is False and cfg.data.num_workers == 0
    assert {"export.tflite.enabled", "data.num_workers"} <= set(filled)
    assert cfg.model.cut_layer == "conv_pw_2_relu"  # logged values win over defaults


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["0123456789abcdef0123456789abcdef"], "No run '0123456789abcdef0123456789abcdef'"),
        (["RUN", "optimizer.learning_rate=[1"], "Cannot apply the overrides"),
        (["RUN", "optimizer=sgd"], "+optimizer=sgd"),
    ],
)
def test_errors_exit_2_with_a_clear_message(original: dict, capsys, arguments, message) -> None:
    arguments = [original["run_id"] if item == "RUN" else item for item in arguments]
    code = main(["reproduce", *arguments, "--tracking-uri", original["uri"]])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error


def test_a_run_without_its_config_exits_2(original: dict, capsys) -> None:
    client = mlflow.MlflowClient(original["uri"])
    bare = client.create_run(client.get_experiment_by_name("mobitune").experiment_id)
    code = main(["reproduce", bare.info.run_id, "--tracking-uri", original["uri"]])
    assert code == 2
    assert "has no readable `config.yaml`" in capsys.readouterr().err


def test_a_missing_store_exits_2_and_is_not_created(tmp_path: Path, capsys) -> None:
    database = tmp_path / "nowhere" / "mlflow.db"
    code = main(["reproduce", "0" * 32, "--tracking-uri", f"sqlite:///{database}"])
    assert code == 2
    assert "No MLflow store" in capsys.readouterr().err
    assert not database.exists()
