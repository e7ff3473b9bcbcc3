"""`mobitune data quickstart` and the `experiment=quickstart` preset: the offline demo."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from conftest import run_mobitune
from mobitune.data import SPLITS
from mobitune.datacheck import scan_dataset
from mobitune.datasets import default_quickstart_root, quickstart_dataset
from mobitune.errors import DataError
from mobitune.model import validate_model_config


def test_quickstart_dataset_layout(tmp_path: Path) -> None:
    destination = tmp_path / "quickstart"
    result = quickstart_dataset(destination)

    assert result.created and result.destination == destination.resolve()
    assert result.totals() == {"train": 1197, "valid": 300, "test": 300}
    for split, per_class in (("valid", 30), ("test", 30)):
        assert result.counts[split] == {str(digit): per_class for digit in range(10)}
    assert sorted(p.name for p in destination.iterdir()) == [
        "README.md",
        "quickstart.json",
        "test",
        "train",
        "valid",
    ]
    for split in SPLITS:
        folders = sorted(p.name for p in (destination / split).iterdir())
        assert folders == [str(digit) for digit in range(10)]
        for digit in folders:
            files = sorted((destination / split / digit).iterdir())
            assert len(files) == result.counts[split][digit]
            assert all(path.suffix == ".png" for path in files)
    with Image.open(next((destination / "train" / "3").iterdir())) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))
    # No file is in two splits.
    names = [p.name for p in destination.rglob("*.png")]
    assert len(names) == len(set(names)) == 1797
    report = scan_dataset(destination)
    assert report.usable and report.problems == []
    assert json.loads((destination / "quickstart.json").read_text())["source"] == (
        "sklearn.datasets.load_digits"
    )

    # A second call finds it and writes nothing (the README's command may run twice).
    marker = destination / "train" / "0"
    before = marker.stat().st_mtime_ns
    again = quickstart_dataset(destination)
    assert not again.created and marker.stat().st_mtime_ns == before
    assert again.counts == result.counts


def test_quickstart_refuses_an_unrelated_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not empty"):
        quickstart_dataset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_default_destination_is_the_default_data_root(
    compose_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOBITUNE_ROOT", str(tmp_path))
    assert default_quickstart_root() == tmp_path / "data" / "quickstart"
    cfg = compose_config(debug=None)
    assert Path(str(cfg.paths.data_dir)) / "quickstart" == tmp_path / "data" / "quickstart"


def test_quickstart_preset(compose_config) -> None:
    cfg = compose_config("experiment=quickstart", debug=None)
    assert cfg.model.weights is None
    assert str(cfg.model.trainable_layers) == "all"
    assert 32 <= cfg.data.image_size <= 64 and cfg.model.alpha <= 0.5
    assert cfg.trainer.epochs <= 10 and cfg.optimizer.learning_rate >= 1e-3
    spec = validate_model_config(cfg.model, int(cfg.data.image_size), 10)
    assert spec.weights is None and spec.cut_layer == "conv_pw_5_relu"


@pytest.mark.slow
def test_readme_main_command_learns_offline(tmp_path: Path) -> None:
    """`mobitune data quickstart && mobitune train experiment=quickstart` on a fresh root."""
    for arguments in (["data", "quickstart"], ["train", "experiment=quickstart"]):
        result = run_mobitune(*arguments, root=tmp_path, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("mobitune").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.train_size"] == "1197"
    # Chance is 0.10; the preset reached 0.95 when it was tuned.
    assert run.data.metrics["val_accuracy"] >= 0.8
    assert run.data.metrics["test_accuracy"] >= 0.8
