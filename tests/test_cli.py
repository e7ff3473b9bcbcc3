"""The `mobitune` console script, run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import mlflow

from conftest import run_mobitune


def test_unknown_cut_layer_exits_2_without_traceback(tmp_path: Path, image_dataset: Path) -> None:
    result = run_mobitune(
        "train",
        f"data.root={image_dataset}",
        "model.weights=null",
        "model.cut_layer=nope",
        root=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "model.cut_layer" in result.stderr and "conv_pw_13_relu" in result.stderr
    assert "global_average_pooling2d" in result.stderr


def test_missing_dataset_exits_2_with_the_fix(tmp_path: Path) -> None:
    result = run_mobitune("train", f"data.root={tmp_path / 'absent'}", root=tmp_path)
    assert result.returncode == 2
    assert "data.root" in result.stderr and "Traceback" not in result.stderr


def test_cfg_job_prints_the_config(tmp_path: Path) -> None:
    result = run_mobitune("train", "--cfg", "job", "optimizer.learning_rate=0.001", root=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "learning_rate: 0.001" in result.stdout and "cut_layer:" in result.stdout


def test_train_from_the_command_line(tmp_path: Path, image_dataset: Path) -> None:
    result = run_mobitune(
        "train",
        "debug=tiny",
        f"data.root={image_dataset}",
        "trainer.epochs=1",
        "tracking.log_model=false",
        root=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mobitune").experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED"]
    run_id = runs[0].info.run_id
    overrides = Path(client.download_artifacts(run_id, "overrides.yaml", str(tmp_path)))
    assert "trainer.epochs=1" in overrides.read_text()
    assert (tmp_path / "outputs" / "runs").is_dir()
