"""`mobitune register` and the store every run-reading command opens."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from conftest import compose_run_config, tracking_uri_of
from mobitune.cli import main
from mobitune.errors import MobituneError
from mobitune.registry import (
    open_store,
    register_run_model,
    resolve_tracking_uri,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, image_dataset: Path) -> dict:
    """One tracked tiny run with its model logged."""
    from mobitune.train import train

    root = tmp_path_factory.mktemp("registry")
    train(compose_run_config(root, image_dataset, "trainer.epochs=1"))
    uri = tracking_uri_of(root)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mobitune").experiment_id])
    return {"root": root, "uri": uri, "run_id": run.info.run_id}


def test_register_then_predict_with_the_champion_alias(
    trained: dict, image_dataset: Path, capsys
) -> None:
    code = main(
        [
            "register",
            trained["run_id"],
            "--name",
            "shapes",
            "--alias",
            "champion",
            "--tracking-uri",
            trained["uri"],
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert "'shapes' version 1" in output and "models:/shapes@champion" in output
    client = mlflow.MlflowClient(trained["uri"])
    version = client.get_model_version_by_alias("shapes", "champion")
    assert (str(version.version), version.run_id) == ("1", trained["run_id"])

    code = main(
        [
            "predict",
            "models:/shapes@champion",
            str(image_dataset / "test"),
            "--tracking-uri",
            trained["uri"],
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 6
    assert {line.split("\t")[1] for line in lines} <= {"circle", "square", "stripes"}
    assert main(["predict", "models:/shapes/1", lines[0].split("\t")[0], "--tracking-uri",
                 trained["uri"]]) == 0  # fmt: skip


def test_registering_again_makes_a_new_version_and_moves_the_alias(trained: dict) -> None:
    first = register_run_model(trained["run_id"], "moving", "champion", trained["uri"])
    second = register_run_model(trained["run_id"], "moving", "champion", trained["uri"])
    assert (first, second) == (1, 2)
    client = mlflow.MlflowClient(trained["uri"])
    assert str(client.get_model_version_by_alias("moving", "champion").version) == "2"
    assert register_run_model(trained["run_id"], "no-alias", tracking_uri=trained["uri"]) == 1


def test_a_run_without_a_model_cannot_be_registered(trained: dict, capsys) -> None:
    client = mlflow.MlflowClient(trained["uri"])
    bare = client.create_run(client.get_experiment_by_name("mobitune").experiment_id)
    code = main(["register", bare.info.run_id, "--name", "x", "--tracking-uri", trained["uri"]])
    error = capsys.readouterr().err
    assert code == 2 and "logged no model" in error and "Traceback" not in error
    with pytest.raises(MobituneError, match="Names cannot contain"):
        register_run_model(trained["run_id"], "bad/name", tracking_uri=trained["uri"])


def test_tracking_uri_comes_from_the_flag_then_the_environment_then_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOBITUNE_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////from/env.db")
    assert resolve_tracking_uri() == "sqlite:////from/env.db"
    assert resolve_tracking_uri("sqlite:////given.db") == "sqlite:////given.db"
    database = tmp_path / "store.db"
    database.touch()
    assert resolve_tracking_uri(str(database)) == f"sqlite:///{database}"
    with pytest.raises(MobituneError, match="not a store"):
        resolve_tracking_uri(str(tmp_path))
    with pytest.raises(MobituneError, match="old file store"):
        resolve_tracking_uri(tmp_path.as_uri())


def test_the_project_store_is_the_default_of_every_command(
    trained: dict, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MOBITUNE_ROOT", str(trained["root"]))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert open_store().uri == trained["uri"]
    assert main(["register", trained["run_id"], "--name", "by-default"]) == 0
    assert "'by-default' version 1" in capsys.readouterr().out


def test_a_missing_store_is_reported_not_created(tmp_path: Path, capsys) -> None:
    database = tmp_path / "absent" / "mlflow.db"
    code = main(["register", "0" * 32, "--name", "x", "--tracking-uri", f"sqlite:///{database}"])
    assert code == 2 and "No MLflow store" in capsys.readouterr().err
    assert not database.exists()
