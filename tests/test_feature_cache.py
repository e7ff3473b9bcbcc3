"""The frozen-feature cache: same metrics as without it, reuse, concurrency, bounds, CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import MOBITUNE, run_mobitune, write_dataset
from mobitune.errors import ConfigError
from mobitune.feature_cache import (
    FeatureCache,
    PrecisionLoss,
    cache_settings,
    check_float16,
    describe_entry,
    entry_key,
    feature_dataset,
    split_at_frozen_boundary,
)
from mobitune.train import train

# A config small enough for seconds, that still learns: the frozen part is short enough
# for random weights to pass a signal, the tail holds a training-mode BatchNormalization
# layer, and dropout draws random numbers in the tail.
LEARNING = (
    "model.cut_layer=conv_pw_2_relu",
    "model.trainable_layers=4",
    "model.dropout=0.3",
    "optimizer.learning_rate=0.01",
    "trainer.epochs=3",
    "tracking.log_model=false",
)
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
COMPARED = (*EPOCH_METRICS, "test_loss", "test_accuracy")


def runs_by_start(uri: str):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("mobitune")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def epoch_history(client, run_id: str) -> dict[str, list[float]]:
    return {
        name: [point.value for point in client.get_metric_history(run_id, name)]
        for name in EPOCH_METRICS
    }


def test_cached_training_equals_uncached_and_reuses_the_entry(
    compose_config, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    uncached = train(compose_config(*LEARNING, "cache.enabled=false"))
    built = train(compose_config(*LEARNING))
    cache = FeatureCache(tmp_path / ".cache" / "mobitune")
    [entry] = cache.entries()
    files = sorted(entry.path.glob("*.npy"))
    written = {path.name: path.stat().st_mtime_ns for path in files}
    reused = train(compose_config(*LEARNING))
    # An entry bigger than the bound is not kept on disk, but still used for the run.
    in_memory = train(compose_config(*LEARNING, "cache.max_gb=0"))

    # The run learned something, so equal metrics mean equal training.
    assert uncached["loss"] < 0.5 and uncached["val_accuracy"] > 0.4
    for name in COMPARED:
        assert built[name] == pytest.approx(uncached[name], abs=1e-3), name
        assert reused[name] == pytest.approx(uncached[name], abs=1e-3), name
        assert in_memory[name] == pytest.approx(uncached[name], abs=1e-3), name

    client, runs = runs_by_start(uri)
    statuses = [run.data.params["cache.status"] for run in runs]
    assert statuses == ["off", "built", "hit", "memory"]
    assert [run.data.params["cache.used"] for run in runs] == ["false", "true", "true", "true"]
    assert [run.data.metrics["cache.hit"] for run in runs] == [0.0, 0.0, 1.0, 0.0]
    assert runs[0].data.params["cache.reason"] == "cache.enabled=false"
    assert "cache.max_gb" in runs[3].data.params["cache.reason"]
    assert runs[2].data.params["cache.key"] == entry.key
    assert runs[2].data.metrics["cache.feature_seconds"] >= 0
    histories = [epoch_history(client, run.info.run_id) for run in runs]
    for history in histories[1:]:
        for name in EPOCH_METRICS:
            np.testing.assert_allclose(history[name], histories[0][name], atol=1e-3)
            assert len(history[name]) == 3

    # The third and fourth runs built nothing: one entry, its files untouched.
    [again] = cache.entries()
    assert again.key == entry.key
    assert {path.name: path.stat().st_mtime_ns for path in files} == written
    assert again.last_used >= entry.last_used
    assert entry.meta["boundary"] == "conv_dw_2_relu"
    assert entry.meta["split_sizes"] == {"train": 18, "valid": 9, "test": 6}


def test_augmentation_turns_the_cache_off_and_says_why(
    compose_config, tmp_path: Path, caplog
) -> None:
    caplog.set_level("INFO", logger="mobitune.feature_cache")
    cfg = compose_config(
        *LEARNING,
        "trainer.epochs=1",
        "data.augmentation.enabled=true",
        "data.augmentation.flip=horizontal",
    )
    train(cfg)
    assert any(
        "Feature cache not used" in record.message and "augmentation" in record.message
        for record in caplog.records
    )
    _, [run] = runs_by_start(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert run.data.params["cache.used"] == "false"
    assert "data.augmentation.enabled=true" in run.data.params["cache.reason"]
    assert not (tmp_path / ".cache" / "mobitune" / "features").exists()


def test_key_follows_the_frozen_part_not_the_cut(compose_config, image_dataset: Path) -> None:
    import keras

    from mobitune.data import load_data
    from mobitune.model import build_model, validate_model_config

    def key_for(*overrides: str) -> tuple[str, str]:
        keras.backend.clear_session()
        cfg = compose_config(*overrides)
        keras.utils.set_random_seed(int(cfg.trainer.seed))
        data = load_data(cfg.data)
        model = build_model(validate_model_config(cfg.model, cfg.data.image_size, 3))
        split = split_at_frozen_boundary(model)
        return split.boundary, entry_key(describe_entry(data, split, cfg, "float32"))

    # Cut at the pooling layer or before it: the last 3 trainable layers differ, but with
    # `conv_pw_13` trainable in both, the frozen part (up to conv_dw_13_relu) is the same.
    at_pooling = key_for("model.trainable_layers=5")
    before_pooling = key_for("model.cut_layer=conv_pw_13_relu", "model.trainable_layers=4")
    assert at_pooling[0] == before_pooling[0] == "conv_dw_13_relu"
    assert at_pooling[1] == before_pooling[1]
    # Random weights drawn from another seed, another size: other features.
    assert key_for("model.trainable_layers=5", "trainer.seed=7")[1] != at_pooling[1]
    assert key_for("model.trainable_layers=5", "data.image_size=40")[1] != at_pooling[1]
    # A weightless layer more in the tail: the same frozen part, the same key.
    assert key_for("model.trainable_layers=6") == at_pooling
    assert key_for("model.trainable_layers=7")[0] == "conv_dw_13"


def test_extracted_features_are_bit_identical_to_what_training_computes(
    compose_config,
) -> None:
    """The tail's training-mode BatchNormalization can amplify last-bit differences over
    the epochs, so the features must be exactly what the full model computes in fit."""
    import keras

    from mobitune.data import load_data, make_dataset
    from mobitune.feature_cache import extract_features, make_extractor
    from mobitune.model import build_model, validate_model_config

    cfg = compose_config("data.image_size=48", "model.alpha=0.5")
    keras.utils.set_random_seed(0)
    data = load_data(cfg.data)
    model = build_model(validate_model_config(cfg.model, cfg.data.image_size, 3))
    split = split_at_frozen_boundary(model)
    arrays = data.arrays["train"]
    features = np.empty((len(arrays.labels), *split.frozen.output.shape[1:]), np.float32)
    extract_features(make_extractor(split.frozen), arrays, features, 3)
    # What fit feeds the model: the training pipeline's batches (batch size 8 here).
    expected = split.frozen.predict(make_dataset(arrays, 3, 8, shuffle=False), verbose=0)
    np.testing.assert_array_equal(features, expected)
    assert np.abs(features).max() > 0


def test_nothing_frozen_means_no_split(compose_config) -> None:
    from mobitune.model import build_model, validate_model_config

    cfg = compose_config("model.trainable_layers=all")
    model = build_model(validate_model_config(cfg.model, cfg.data.image_size, 3))
    assert split_at_frozen_boundary(model) is None


def test_feature_batches_follow_the_image_pipeline_order() -> None:
    """The same seeded shuffle over indices gives the same batches as over images."""
    import keras
    import tensorflow as tf

    from mobitune.data import SplitArrays, make_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(23, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=23).astype(np.int32)
    preprocessed = keras.applications.mobilenet.preprocess_input(images.astype(np.float32))
    keras.utils.set_random_seed(3)
    image_batches = make_dataset(SplitArrays(images, labels, []), 3, 5, shuffle=True, seed=11)
    feature_batches = feature_dataset(preprocessed, labels, 3, 5, shuffle=True, seed=11)
    for _ in range(2):  # two epochs: reshuffled alike
        pairs = zip(image_batches, feature_batches, strict=True)
        for (expected_x, expected_y), (x, y) in pairs:
            np.testing.assert_array_equal(x.numpy(), expected_x.numpy())
            np.testing.assert_array_equal(y.numpy(), expected_y.numpy())
    assert isinstance(x, tf.Tensor) and x.dtype == tf.float32


# --------------------------------------------------------------------------- the store

SHAPE = (2, 2, 4)


def describe(dtype: str = "float32") -> dict:
    return {"feature_shape": list(SHAPE), "dtype": dtype, "boundary": "b", "split_sizes": {}}


def constant_fill(value: float):
    def fill(split: str, out: np.ndarray) -> None:
        out[...] = value

    return fill


def _build_slowly(directory: str, log_file: str, start_at: float) -> tuple[str, float]:
    """Runs in a child process: both children ask for the same entry at the same time."""
    cache = FeatureCache(directory)

    def fill(split: str, out: np.ndarray) -> None:
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {split}\n")
        time.sleep(1.0)  # hold the lock long enough for the other process to wait on it
        out[...] = 7.0

    time.sleep(max(0.0, start_at - time.time()))
    arrays, _, status = cache.get_or_build("same", describe(), {"train": 3, "valid": 2}, fill)
    return status, float(arrays["train"].sum() + arrays["valid"].sum())


def test_two_processes_build_one_entry_once(tmp_path: Path) -> None:
    log_file = tmp_path / "builds.log"
    start_at = time.time() + 2.0
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(
            _build_slowly, [(str(tmp_path / "cache"), str(log_file), start_at)] * 2
        )
    assert sorted(status for status, _ in results) == ["built", "hit"]
    assert [total for _, total in results] == [7.0 * 5 * 16] * 2
    builders = {line.split()[0] for line in log_file.read_text().splitlines()}
    assert len(builders) == 1  # one process computed the features, the other read them
    cache = FeatureCache(tmp_path / "cache")
    assert [entry.key for entry in cache.entries()] == ["same"]
    assert cache.incomplete_folders() == []


def dead_pid() -> int:
    """The pid of a process that has already exited."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(finished.stdout)


def test_entry_left_half_written_by_a_dead_process_is_ignored_and_cleaned(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    # What a process killed mid-write leaves: a temporary folder named after its pid.
    import socket

    orphan = cache.features_dir / f".tmp-k-{socket.gethostname()}-{dead_pid()}-abcd1234"
    orphan.mkdir(parents=True)
    (orphan / "train.npy").write_bytes(b"partial")
    # And an entry folder without its meta.json (never renamed into place by mobitune,
    # but e.g. copied by hand): unreadable, so rebuilt.
    (cache.features_dir / "k").mkdir()
    arrays, _, status = cache.get_or_build("k", describe(), {"train": 2}, constant_fill(1.0))
    assert status == "built" and arrays["train"].shape == (2, *SHAPE)
    assert not orphan.exists()
    assert [entry.key for entry in cache.entries()] == ["k"]


def test_orphans_are_found_on_hosts_whose_names_hold_hyphens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "ip-10-0-0-1")
    cache = FeatureCache(tmp_path)
    orphan = cache.features_dir / f".tmp-k-ip-10-0-0-1-{dead_pid()}-abcd1234"
    alive = cache.features_dir / f".tmp-k-ip-10-0-0-1-{os.getpid()}-abcd1234"
    elsewhere = cache.features_dir / ".tmp-k-other-host-1-abcd1234"  # cannot tell: keep
    for folder in (orphan, alive, elsewhere):
        folder.mkdir(parents=True)
    assert cache.remove_orphans() == [orphan]
    assert alive.exists() and elsewhere.exists()


def test_corrupt_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_build("k", describe(), {"train": 2}, constant_fill(1.0))
    (cache.entry_path("k") / "train.npy").write_bytes(b"garbage")
    arrays, _, status = cache.get_or_build("k", describe(), {"train": 2}, constant_fill(2.0))
    assert status == "built" and float(arrays["train"].max()) == 2.0


def test_least_recently_used_entries_are_evicted_to_fit_the_bound(tmp_path: Path) -> None:
    counts = {"train": 1000}  # 1000 x 16 float32 = 64,000 bytes per entry (+ meta)
    unbounded = FeatureCache(tmp_path)
    for age, key in enumerate(["old", "middle", "recent"]):
        unbounded.get_or_build(key, describe(), counts, constant_fill(1.0))
        stamp = time.time() - 3600 * (3 - age)
        os.utime(unbounded.entry_path(key) / "last_used", (stamp, stamp))
    # Using "old" again makes it the most recently used.
    assert unbounded.get_or_build("old", describe(), counts, constant_fill(1.0))[2] == "hit"
    entry_size = unbounded.entries()[0].size_bytes
    bounded = FeatureCache(tmp_path, max_bytes=int(entry_size * 2.5))
    bounded.get_or_build("new", describe(), counts, constant_fill(1.0))
    remaining = [entry.key for entry in bounded.entries()]
    assert remaining == ["old", "new"]  # "middle", then "recent" went first
    assert bounded.total_bytes() <= bounded.max_bytes


def test_float16_is_kept_only_when_it_holds_the_features(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    arrays, meta, _ = cache.get_or_build(
        "ok", describe("float16"), {"train": 2}, constant_fill(1.5)
    )
    assert arrays["train"].dtype == np.float16 and meta["stored_dtype"] == "float16"

    def vanishing(split: str, out: np.ndarray) -> None:
        values = np.full(out.shape, 1e-9, dtype=np.float32)  # random weights deep inside
        if out.dtype == np.float16:
            check_float16(values)
        out[...] = values

    arrays, meta, _ = cache.get_or_build("tiny", describe("float16"), {"train": 2}, vanishing)
    assert arrays["train"].dtype == np.float32 and meta["stored_dtype"] == "float32"
    assert float(arrays["train"].max()) == pytest.approx(1e-9)
    with pytest.raises(PrecisionLoss):
        check_float16(np.array([1e6], dtype=np.float32))

    # Room for the float16 entry (64 bytes) but not for the float32 one it falls back to.
    small = FeatureCache(tmp_path / "small", max_bytes=100)
    with pytest.raises(OSError, match="exceed the cache limit"):
        small.get_or_build("tiny", describe("float16"), {"train": 2}, vanishing)
    assert small.entries() == [] and small.incomplete_folders() == []


def test_cache_settings_are_checked(compose_config) -> None:
    settings = cache_settings(compose_config())
    assert settings.enabled and settings.dtype == "float32"
    assert settings.directory.name == "mobitune" and settings.max_bytes == 10 * 1024**3
    for override, key in (
        ("cache.max_gb=-1", "cache.max_gb"),
        ("cache.max_gb=lots", "cache.max_gb"),
        ("cache.dtype=int8", "cache.dtype"),
        ("cache.enabled=maybe", "cache.enabled"),
    ):
        with pytest.raises(ConfigError, match=key):
            cache_settings(compose_config(override))


# --------------------------------------------------------------------------- the CLI


def run_cli(*arguments: str, root: Path) -> subprocess.CompletedProcess:
    return run_mobitune("cache", *arguments, root=root, timeout=120)


def test_cache_info_and_clear_from_the_command_line(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / ".cache" / "mobitune")
    for key in ("aaaa1111", "bbbb2222", "cccc3333"):
        description = describe()
        description.update({"dataset_root": "/data/digits", "boundary": "conv_pw_10"})
        cache.get_or_build(key, description, {"train": 10, "valid": 5}, constant_fill(1.0))
    old = time.time() - 10 * 86400
    os.utime(cache.entry_path("cccc3333") / "last_used", (old, old))

    result = run_cli("info", root=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(cache.directory) in result.stdout and "3 entries" in result.stdout
    assert "aaaa1111" in result.stdout and "conv_pw_10" in result.stdout
    assert "/data/digits" in result.stdout

    listing = json.loads(run_cli("info", "--json", root=tmp_path).stdout)
    assert listing["location"] == str(cache.directory)
    assert {entry["key"] for entry in listing["entries"]} == {"aaaa1111", "bbbb2222", "cccc3333"}
    assert listing["total_bytes"] == sum(entry["size_bytes"] for entry in listing["entries"])

    result = run_cli("clear", "--older-than", "7d", root=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [entry.key for entry in cache.entries()] == ["aaaa1111", "bbbb2222"]

    result = run_cli("clear", "--key", "bbbb", root=tmp_path)
    assert result.returncode == 0 and "removed bbbb2222" in result.stdout
    assert [entry.key for entry in cache.entries()] == ["aaaa1111"]

    result = run_cli("clear", "--key", "nope", root=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mobitune cache info" in result.stderr

    result = run_cli("clear", "--older-than", "soon", root=tmp_path)
    assert result.returncode == 2 and "--older-than" in result.stderr

    other = tmp_path / "elsewhere"
    FeatureCache(other).get_or_build("dddd4444", describe(), {"train": 1}, constant_fill(1.0))
    assert "dddd4444" in run_cli("info", "--dir", str(other), root=tmp_path).stdout

    result = run_cli("clear", root=tmp_path)
    assert result.returncode == 0 and "Removed 1 entry" in result.stdout
    assert cache.entries() == []
    assert "0 entries" in run_cli("info", root=tmp_path).stdout


@pytest.mark.slow
def test_two_training_runs_share_a_cache_entry_built_at_once(tmp_path: Path) -> None:
    """End to end: two `mobitune train` processes start together on an empty cache."""
    dataset = write_dataset(tmp_path / "data")
    command = [
        MOBITUNE,
        "train",
        "debug=tiny",
        f"data.root={dataset}",
        *LEARNING,
    ]
    environment = dict(os.environ, MOBITUNE_ROOT=str(tmp_path))
    processes = [
        subprocess.Popen(command, cwd=tmp_path, env=environment, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [process.communicate(timeout=600)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    _, runs = runs_by_start(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert sorted(run.data.params["cache.status"] for run in runs) == ["built", "hit"]
    assert runs[0].data.metrics["val_accuracy"] == pytest.approx(
        runs[1].data.metrics["val_accuracy"], abs=1e-3
    )
    assert len(FeatureCache(tmp_path / ".cache" / "mobitune").entries()) == 1


def test_feature_dataset_does_not_keep_its_features_alive() -> None:
    """A sweep runs trial after trial in one process: each trial's features must be freed."""
    import gc
    import weakref

    features = np.zeros((4, 2, 2, 3), np.float32)
    reference = weakref.ref(features)
    dataset = feature_dataset(features, np.array([0, 1, 0, 1]), 2, 2, shuffle=False)
    batch, _ = next(iter(dataset))
    assert tuple(batch.shape) == (2, 2, 2, 3)
    del features
    gc.collect()
    assert reference() is None
