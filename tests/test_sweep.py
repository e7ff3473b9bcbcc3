"""Optuna sweeps from the CLI: MLflow grouping, failures, pruning, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from conftest import MOBITUNE, run_mobitune


def sweep_command(tmp_path: Path, dataset: Path, *overrides: str) -> list[str]:
    """The arguments of `mobitune sweep seed_space` shrunk to seconds, writing under tmp_path."""
    return [
        "sweep",
        "seed_space",
        "debug=tiny",
        f"data.root={dataset}",
        f"paths.root_dir={tmp_path}",
        f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
        "tracking.log_model=false",
        "study.enqueue_seed=false",
        *overrides,
    ]


def run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_mobitune(*arguments, root=cwd, timeout=900)


def load_study(tmp_path: Path, name: str = "seed_space") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")


def mlflow_runs(tmp_path: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("mobitune")
    return client.search_runs([experiment.experiment_id])


def parent_and_children(tmp_path: Path):
    runs = mlflow_runs(tmp_path)
    parents = [run for run in runs if run.data.tags.get("mobitune.sweep_parent") == "true"]
    assert len(parents) == 1
    children = [
        run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    ]
    return parents[0], children


def test_unknown_sweep_lists_the_sweeps(tmp_path: Path) -> None:
    result = run(["sweep", "nope"], tmp_path)
    assert result.returncode == 2
    assert "seed_space" in result.stderr and "quickstart" in result.stderr


def test_failing_trial_is_failed_in_both_stores_and_the_sweep_finishes(
    tmp_path: Path, image_dataset: Path
) -> None:
    command = sweep_command(
        tmp_path,
        image_dataset,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=2",
        "hydra.launcher.n_jobs=1",
        "hydra.sweeper.max_failure_rate=0.5",
        "model.cut_layer=choice(global_average_pooling2d,no_such_layer)",
        "model.trainable_layers=2",
        "optimizer.learning_rate=0.001",
        "trainer.epochs=1",
        "tracking.log_model=true",
        "study.register_best=sweep_best",
    )
    result = run(command, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    study = load_study(tmp_path)
    assert len(study.trials) == 2  # the grid's two points, the failed one not repeated
    states = {t.params["model.cut_layer"]: t.state for t in study.trials}
    assert states == {
        "global_average_pooling2d": optuna.trial.TrialState.COMPLETE,
        "no_such_layer": optuna.trial.TrialState.FAIL,
    }
    parent, children = parent_and_children(tmp_path)
    assert parent.info.status == "FINISHED"
    by_status = {run.info.status: run for run in children}
    assert set(by_status) == {"FINISHED", "FAILED"}
    failed = by_status["FAILED"]
    assert "model.cut_layer" in failed.data.tags["mobitune.error"]
    assert failed.data.tags["optuna.study"] == "seed_space"
    failed_trial = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert failed_trial.user_attrs["mlflow_run_id"] == failed.info.run_id
    assert failed.data.tags["optuna.trial_number"] == str(failed_trial.number)
    # The best (only complete) trial's model was registered with the champion alias.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    champion = client.get_model_version_by_alias("sweep_best", "champion")
    assert champion.run_id == by_status["FINISHED"].info.run_id
    assert parent.data.tags["mobitune.registered_model"] == f"sweep_best/{champion.version}"

    # The same command again: nothing is left to run, and nothing is registered twice.
    again = run(command, tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert len(load_study(tmp_path).trials) == 2
    assert len(client.search_model_versions("name = 'sweep_best'")) == 1


def test_too_many_failures_stop_the_sweep_with_a_clear_error(
    tmp_path: Path, image_dataset: Path
) -> None:
    command = sweep_command(
        tmp_path,
        image_dataset,
        "hydra.sweeper.n_trials=4",
        "hydra.launcher.n_jobs=1",
        "hydra.sweeper.max_failure_rate=0",
        "model.cut_layer=no_such_layer",
        "trainer.epochs=1",
    )
    result = run(command, tmp_path)
    assert result.returncode != 0
    assert "max_failure_rate" in result.stderr
    assert [t.state for t in load_study(tmp_path).trials] == [optuna.trial.TrialState.FAIL]
    parent, children = parent_and_children(tmp_path)
    assert parent.info.status == "FAILED"
    assert [run.info.status for run in children] == ["FAILED"]


def write_noise_dataset(root: Path, size: int = 32) -> Path:
    """Three classes of random-noise images: nothing to learn, so a sane trial stays near
    chance (val_loss ~ ln 3) while a wild learning rate makes confident, wrong predictions."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("valid", 4), ("test", 2)):
        for name in ("a", "b", "c"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def test_pruner_stops_a_clearly_bad_trial_before_its_last_epoch(tmp_path: Path) -> None:
    dataset = write_noise_dataset(tmp_path / "noise")
    common = (
        "hydra.launcher.n_jobs=1",
        "objective=val_loss",
        "hydra.sweeper.direction=minimize",
        "study.pruner.name=median",
        "study.pruner.n_startup_trials=1",
        "study.pruner.n_warmup_steps=0",
        "trainer.epochs=4",
        "model.cut_layer=conv_pw_1_relu",
        "model.trainable_layers=1",
    )
    good = run(
        sweep_command(
            tmp_path, dataset, *common, "hydra.sweeper.n_trials=1", "optimizer.learning_rate=0.001"
        ),
        tmp_path,
    )
    assert good.returncode == 0, good.stderr[-4000:]
    # The same study, one more trial: a learning rate of 10.
    bad = run(
        sweep_command(
            tmp_path, dataset, *common, "hydra.sweeper.n_trials=2", "optimizer.learning_rate=10"
        ),
        tmp_path,
    )
    assert bad.returncode == 0, bad.stderr[-4000:]

    first, second = load_study(tmp_path).trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.PRUNED
    assert max(second.intermediate_values) < 3  # stopped before its last epoch (3)
    _, children = parent_and_children(tmp_path)
    pruned = next(run for run in children if run.info.run_id == second.user_attrs["mlflow_run_id"])
    assert pruned.data.tags["mobitune.pruned"] == "true"
    assert pruned.info.status == "FINISHED"
    assert "val_loss" in pruned.data.metrics and "test_accuracy" in pruned.data.metrics

    # Reproducing the pruned trial trains as many epochs as it did, and matches it.
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    reproduced = run_mobitune(
        "reproduce", pruned.info.run_id, "--tracking-uri", uri, root=tmp_path, timeout=900
    )
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr[-3000:]
    assert "pruned after epoch" in reproduced.stdout + reproduced.stderr
    client = mlflow.MlflowClient(uri)
    (copy,) = client.search_runs(
        [pruned.info.experiment_id],
        filter_string=f"tags.`mobitune.reproduced_from` = '{pruned.info.run_id}'",
    )
    epochs_run = max(second.intermediate_values) + 1
    assert copy.data.params["trainer.epochs"] == str(epochs_run)
    assert len(client.get_metric_history(copy.info.run_id, "val_loss")) == epochs_run


@pytest.mark.slow
def test_parallel_sweep_is_grouped_in_mlflow_and_starts_with_the_seed(
    tmp_path: Path, image_dataset: Path
) -> None:
    command = sweep_command(
        tmp_path,
        image_dataset,
        "hydra.sweeper.n_trials=4",
        "hydra.launcher.n_jobs=2",
        "study.enqueue_seed=true",
        "trainer.epochs=2",
        "model.trainable_layers=range(2,10)",
    )
    result = run(command, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "database is locked" not in result.stderr

    study = load_study(tmp_path)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    seed_trial = study.trials[0]
    assert seed_trial.user_attrs["mobitune.seed_trial"] is True
    assert seed_trial.params["model.trainable_layers"] == 23
    assert seed_trial.params["optimizer.learning_rate"] == pytest.approx(1e-4)

    parent, children = parent_and_children(tmp_path)
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for child in children:
        assert child.data.tags["optuna.study"] == "seed_space"
        artifacts = {item.path for item in client.list_artifacts(child.info.run_id)}
        assert "confusion_matrix.png" in artifacts
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert len(history) == 2
    run_ids = {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert run_ids == {child.info.run_id for child in children}
    assert parent.data.tags["mobitune.best_run_id"] in run_ids
    assert "best_value" in parent.data.metrics
    plots = {item.path for item in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/parallel_coordinate.png"} <= plots
    trial_dirs = sorted(p.name for p in (tmp_path / "outputs" / "sweeps" / "seed_space").iterdir())
    assert [d for d in trial_dirs if d.startswith("trial_")] == [f"trial_{n}" for n in range(4)]


@pytest.mark.slow
def test_resume_after_sigkill_finishes_exactly_n_trials(
    tmp_path: Path, image_dataset: Path
) -> None:
    command = sweep_command(
        tmp_path,
        image_dataset,
        "hydra.sweeper.n_trials=3",
        "hydra.launcher.n_jobs=1",
        "study.heartbeat_interval=1",
        "study.grace_period=4",
        "trainer.epochs=6",
        "optimizer.learning_rate=tag(log,interval(1e-4,1e-2))",
    )
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MOBITUNE_ROOT=str(tmp_path))
    process = subprocess.Popen(
        [MOBITUNE, *command],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Wait until a trial is running with its MLflow run open, then kill -9 the sweep.
    deadline = time.monotonic() + 300
    killed_trial = None
    while time.monotonic() < deadline and killed_trial is None:
        time.sleep(1)
        try:
            trials = load_study(tmp_path).trials
        except Exception:  # noqa: BLE001 - the study does not exist yet
            continue
        running = [
            t
            for t in trials
            if t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
        ]
        if running:
            killed_trial = running[0].number
    assert killed_trial is not None, "no trial started in time"
    time.sleep(2)  # mid-trial
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)

    result = run(command, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    trials = load_study(tmp_path).trials
    finished = [
        t
        for t in trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 3
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[killed_trial].state == optuna.trial.TrialState.FAIL
    runs = mlflow_runs(tmp_path)
    assert not [run for run in runs if run.info.status == "RUNNING"]
    killed_run = trials[killed_trial].user_attrs["mlflow_run_id"]
    assert next(r for r in runs if r.info.run_id == killed_run).info.status == "FAILED"
    # Every trial wrote to its own folder: nothing was overwritten.
    trial_dirs = [p.name for p in (tmp_path / "outputs" / "sweeps" / "seed_space").iterdir()]
    assert len([d for d in trial_dirs if d.startswith("trial_")]) == len(trials)


def test_multi_objective_sweep_logs_the_pareto_front(tmp_path: Path, image_dataset: Path) -> None:
    command = sweep_command(
        tmp_path,
        image_dataset,
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.n_trials=2",
        "hydra.launcher.n_jobs=1",
        "objective.metric=[val_accuracy,latency_ms]",
        "objective.mode=[max,min]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "study.pruner.name=none",
        "trainer.epochs=1",
        "model.trainable_layers=range(2,10)",
    )
    result = run(command, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    study = load_study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(len(t.values) == 2 for t in study.trials)
    parent, _ = parent_and_children(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert "pareto_front.json" in artifacts
    front = client.download_artifacts(parent.info.run_id, "pareto_front.json", str(tmp_path))
    import json

    entries = json.loads(Path(front).read_text())
    assert entries and all(len(entry["values"]) == 2 and entry["run_id"] for entry in entries)


def test_direction_must_match_the_objective(tmp_path: Path, image_dataset: Path) -> None:
    command = sweep_command(
        tmp_path, image_dataset, "hydra.sweeper.direction=minimize", "hydra.sweeper.n_trials=1"
    )
    result = run(command, tmp_path)
    assert result.returncode != 0
    assert "hydra.sweeper.direction" in result.stderr and "objective.mode" in result.stderr


def test_gp_sampler_without_pytorch_says_what_to_install(
    tmp_path: Path, image_dataset: Path
) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed: the GP sampler works")
    command = sweep_command(
        tmp_path, image_dataset, "hydra/sweeper/sampler=gp", "hydra.sweeper.n_trials=1"
    )
    result = run(command, tmp_path)
    assert result.returncode != 0
    assert "mobitune[gp]" in result.stderr
