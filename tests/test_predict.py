"""`mobitune predict`: classes of image files from a logged model, named as the run named them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow
import pytest

from conftest import compose_run_config, tracking_uri_of
from mobitune.cli import main
from mobitune.predict import collect_images, load_model, normalise_model_uri

# A tiny model that learns the generated shapes in 3 epochs (confident predictions).
LEARNING = (
    "model.alpha=1.0",
    "model.cut_layer=conv_pw_2_relu",
    "model.trainable_layers=all",
    "model.freeze_batchnorm=true",
    "optimizer.learning_rate=1e-2",
    "trainer.epochs=3",
    # Not the default interpolation: predict must take it from the run.
    "data.interpolation=nearest",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, image_dataset: Path) -> dict:
    """One tracked run with its model logged, and its own test predictions."""
    from mobitune.train import train

    root = tmp_path_factory.mktemp("predict")
    train(compose_run_config(root, image_dataset, *LEARNING))
    uri = tracking_uri_of(root)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mobitune").experiment_id])
    logged = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "test_predictions.json", str(root))
        ).read_text()
    )
    return {"root": root, "uri": uri, "run_id": run.info.run_id, "test_predictions": logged}


def run_test_classes(trained: dict) -> dict[str, str]:
    """Resolved path -> class name the run's own test evaluation predicted."""
    logged = trained["test_predictions"]
    names = logged["class_names"]
    return {
        str(Path(path).resolve()): names[index]
        for path, index in zip(logged["paths"], logged["predicted"], strict=True)
    }


def test_predict_on_a_folder_matches_the_runs_test_evaluation(
    trained: dict, image_dataset: Path, capsys
) -> None:
    code = main(
        [
            "predict",
            f"runs:/{trained['run_id']}/model",
            str(image_dataset / "test"),
            "--tracking-uri",
            trained["uri"],
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    lines = [line.split("\t") for line in output.strip().splitlines()]
    expected = run_test_classes(trained)
    assert len(lines) == len(expected) == 6
    predicted = {str(Path(path).resolve()): name for path, name, _ in lines}
    assert predicted == expected
    assert all(0.0 < float(probability) <= 1.0 for _, _, probability in lines)
    # The model learnt the shapes: most test predictions are the true class.
    truths = {path: Path(path).parent.name for path in predicted}
    assert sum(predicted[path] == truths[path] for path in predicted) >= 4


def test_predict_writes_csv_and_json(trained: dict, image_dataset: Path, tmp_path: Path) -> None:
    model_id = (
        mlflow.MlflowClient(trained["uri"])
        .search_logged_models(
            experiment_ids=[
                mlflow.MlflowClient(trained["uri"]).get_run(trained["run_id"]).info.experiment_id
            ]
        )[0]
        .model_id
    )
    expected = run_test_classes(trained)
    csv_path = tmp_path / "out" / "predictions.csv"
    arguments = [str(image_dataset / "test"), "--tracking-uri", trained["uri"], "--batch-size", "4"]
    assert main(["predict", model_id, *arguments, "--output", str(csv_path)]) == 0
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {str(Path(row["path"]).resolve()): row["class_name"] for row in rows} == expected
    assert set(rows[0]) >= {"path", "class_name", "probability", "probability_circle"}

    json_path = tmp_path / "predictions.json"
    assert main(["predict", trained["run_id"], *arguments, "-o", str(json_path)]) == 0
    written = json.loads(json_path.read_text())
    assert written["class_names"] == ["circle", "square", "stripes"]
    assert written["model_uri"] == f"runs:/{trained['run_id']}/model"
    assert {
        str(Path(item["path"]).resolve()): item["class_name"] for item in written["predictions"]
    } == expected
    assert written["failed"] == []


def test_class_names_and_interpolation_come_from_the_run(
    trained: dict, image_dataset: Path, tmp_path: Path, capsys
) -> None:
    # Images in a folder that says nothing about classes.
    flat = tmp_path / "new images"
    (flat / "nested").mkdir(parents=True)
    for index, source in enumerate(sorted((image_dataset / "test").rglob("*.png"))):
        shutil.copy(source, flat / ("nested" if index % 2 else ".") / f"image {index}.png")
    (flat / "notes.txt").write_text("not an image")
    (flat / ".hidden.png").write_bytes(b"hidden")
    loaded = load_model(f"runs:/{trained['run_id']}/model", trained["uri"])
    assert loaded.class_names == ["circle", "square", "stripes"]
    assert (loaded.image_size, loaded.interpolation) == (32, "nearest")
    assert len(collect_images([flat])) == 6

    assert main(["predict", trained["run_id"], str(flat), "--tracking-uri", trained["uri"]]) == 0
    names = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(names) == 6 and set(names) <= {"circle", "square", "stripes"}


def test_an_unreadable_image_is_skipped_and_reported(
    trained: dict, image_dataset: Path, tmp_path: Path, capsys
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    good = next(iter(sorted((image_dataset / "test" / "square").iterdir())))
    code = main(
        ["predict", trained["run_id"], str(broken), str(good), "--tracking-uri", trained["uri"]]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.count("\n") == 1 and str(good) in captured.out
    assert f"skipped {broken}" in captured.err and "1 of 2 files" in captured.err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["RUN", "MISSING"], "No file or folder at"),
        (["RUN", "TEXT"], "is not an image file"),
        (["RUN", "EMPTY"], "holds no image files"),
        (["runs:/0123456789abcdef0123456789abcdef/model", "GOOD"], "Cannot find the model"),
        (["models:/no-such-model@champion", "GOOD"], "Cannot find the model"),
        (["RUN", "GOOD", "--output", "out.txt"], "must end in .csv or .json"),
    ],
)
def test_errors_exit_2_with_a_clear_message(
    trained: dict, image_dataset: Path, tmp_path: Path, capsys, arguments, message
) -> None:
    (tmp_path / "notes.txt").write_text("text")
    (tmp_path / "empty").mkdir()
    replacements = {
        "RUN": trained["run_id"],
        "MISSING": str(tmp_path / "absent.png"),
        "TEXT": str(tmp_path / "notes.txt"),
        "EMPTY": str(tmp_path / "empty"),
        "GOOD": str(image_dataset / "test"),
    }
    arguments = [replacements.get(item, item) for item in arguments]
    code = main(["predict", *arguments, "--tracking-uri", trained["uri"]])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error


def test_model_uri_shorthands() -> None:
    assert normalise_model_uri("m-abc123") == "models:/m-abc123"
    assert normalise_model_uri("0123456789abcdef0123456789abcdef") == (
        "runs:/0123456789abcdef0123456789abcdef/model"
    )
    assert normalise_model_uri("models:/shapes@champion") == "models:/shapes@champion"


def test_a_local_model_folder_needs_no_store(
    trained: dict, image_dataset: Path, tmp_path: Path, capsys
) -> None:
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{trained['run_id']}/model",
        dst_path=str(tmp_path / "model"),
        tracking_uri=trained["uri"],
    )
    missing_store = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    code = main(["predict", folder, str(image_dataset / "test"), "--tracking-uri", missing_store])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 6
    assert {line.split("\t")[1] for line in lines} <= {"circle", "square", "stripes"}
    # With the store, the run's interpolation is found again.
    assert load_model(folder, trained["uri"]).interpolation == "nearest"
