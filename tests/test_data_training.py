"""Training uses the dataset checks: bad files are skipped and recorded, bad structure stops."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from conftest import tracking_uri_of, write_dataset
from mobitune.datacheck import UnusableDatasetError
from mobitune.train import train


def runs_of(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("mobitune")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def artifact_json(uri: str, run_id: str, name: str, folder: Path) -> dict:
    client = mlflow.MlflowClient(uri)
    return json.loads(Path(client.download_artifacts(run_id, name, str(folder))).read_text())


def test_corrupt_files_are_skipped_and_listed_in_the_run(compose_config, tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "dataset", counts={"train": 4, "valid": 2, "test": 2}, size=32)
    (root / "train" / "circle" / "circle_0.png").write_bytes(b"\x89PNG but not really")
    truncated = root / "valid" / "square" / "square_1.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    cmyk = root / "train" / "stripes" / "stripes_0.png"
    Image.open(cmyk).convert("CMYK").save(cmyk.with_suffix(".jpg"))
    cmyk.unlink()
    # Non-ASCII names work (and are reported as a warning).
    (root / "train" / "circle" / "circle_1.png").rename(
        root / "train" / "circle" / "círculo 日本.png"
    )

    cfg = compose_config(f"data.root={root}", "trainer.epochs=1", "tracking.log_model=false")
    metrics = train(cfg)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0

    uri = tracking_uri_of(tmp_path)
    (run,) = runs_of(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.skipped_files"] == "2"
    assert run.data.metrics["data.skipped_files"] == 2
    assert run.data.params["data.converted_images"] == "1"
    assert (run.data.params["data.train_size"], run.data.params["data.valid_size"]) == ("11", "5")
    report = artifact_json(uri, run.info.run_id, "data_report.json", tmp_path)
    assert {(item["path"], item["kind"]) for item in report["skipped"]} == {
        ("train/circle/circle_0.png", "corrupt"),
        ("valid/square/square_1.png", "corrupt"),
    }
    assert all(item["message"] for item in report["skipped"])
    assert report["converted"] == [
        {
            "kind": "converted",
            "path": "train/stripes/stripes_0.jpg",
            "message": "CMYK image (CMYK), converted to RGB",
        }
    ]
    assert report["converted_modes"] == {"CMYK": 1}
    assert report["sizes"] == {"train": 11, "valid": 5, "test": 6}
    assert report["summary"] == {"fatal": 0, "skipped": 2, "converted": 1, "warning": 1}
    assert report["warnings"][0]["path"] == "train/circle/círculo 日本.png"
    assert run.data.params["data.warnings"] == "1"
    assert report["usable"] is True and report["decoded"] is True


def test_unusable_structure_stops_before_any_run(compose_config, tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "dataset", counts={"train": 2, "test": 1}, size=16)
    cfg = compose_config(f"data.root={root}")
    with pytest.raises(UnusableDatasetError) as raised:
        train(cfg)
    assert "no valid/ folder" in str(raised.value)
    assert runs_of(tracking_uri_of(tmp_path)) == []


def test_nothing_readable_in_a_class_fails_the_run_with_its_report(
    compose_config, tmp_path: Path
) -> None:
    root = write_dataset(tmp_path / "dataset", counts={"train": 2, "valid": 1, "test": 1}, size=16)
    for path in (root / "train" / "square").iterdir():
        path.write_bytes(b"not an image")
    cfg = compose_config(f"data.root={root}", "tracking.log_model=false")
    with pytest.raises(UnusableDatasetError) as raised:
        train(cfg)
    assert "train/square/: class folder with no usable image" in str(raised.value)
    uri = tracking_uri_of(tmp_path)
    (run,) = runs_of(uri)
    assert run.info.status == "FAILED"
    report = artifact_json(uri, run.info.run_id, "data_report.json", tmp_path)
    assert report["usable"] is False
    assert [item["path"] for item in report["fatal"]] == ["train/square/"]
    assert len(report["skipped"]) == 2
