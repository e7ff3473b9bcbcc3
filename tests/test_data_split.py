"""`mobitune data split`: per-class valid/test/train, deterministic, never touching SRC."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATASET, run_mobitune
from mobitune.datasets import plan_split, split_dataset
from mobitune.errors import DataError

SHARED_IMAGES = SHARED_DATASET / "images"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` with its size and modification time."""
    return {
        path.relative_to(folder).as_posix(): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def listing(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def class_folders(root: Path, sizes: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, count in sizes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{index:03d}.png")
    return root


@pytest.mark.skipif(
    not SHARED_IMAGES.is_dir(),
    reason=f"the Sign Language Digits dataset is not at {SHARED_IMAGES} (../shared/datasets)",
)
def test_shared_dataset_splits_like_the_seed(tmp_path: Path) -> None:
    before = snapshot(SHARED_IMAGES)
    first = split_dataset(SHARED_IMAGES, tmp_path / "first", valid=30, test=5, seed=0)
    split_dataset(SHARED_IMAGES, tmp_path / "second", valid=30, test=5, seed=0)

    assert first.totals() == {"train": 1712, "valid": 300, "test": 50}
    assert all(
        first.counts[split][c] == n
        for split, n in (("valid", 30), ("test", 5))
        for c in first.counts[split]
    )
    assert listing(tmp_path / "first") == listing(tmp_path / "second")
    for split, count in (("train", 1712), ("valid", 300), ("test", 50)):
        assert len(listing(tmp_path / "first" / split)) == count
    assert snapshot(SHARED_IMAGES) == before  # SRC unchanged
    manifest = json.loads((tmp_path / "first" / "split.json").read_text())
    assert manifest["seed"] == 0 and manifest["left_out"] == []
    assert sorted(manifest["files"]["test"]["7"]) == sorted(
        p.name for p in (tmp_path / "first" / "test" / "7").iterdir()
    )


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    source = class_folders(tmp_path / "source", {"a": 20, "b": 20})
    same = [plan_split(source, valid=4, test=2, seed=7).assignment for _ in range(2)]
    assert same[0] == same[1]
    other = plan_split(source, valid=4, test=2, seed=8).assignment
    assert other["valid"] != same[0]["valid"]
    assert {split: len(files) for split, files in other["train"].items()} == {"a": 14, "b": 14}


def test_fractions_follow_class_sizes(tmp_path: Path) -> None:
    source = class_folders(tmp_path / "source", {"big": 40, "small": 10})
    result = split_dataset(
        source, tmp_path / "out", valid_fraction=0.2, test_fraction=0.1, valid=None, test=None
    )
    assert result.counts == {
        "train": {"big": 28, "small": 7},
        "valid": {"big": 8, "small": 2},
        "test": {"big": 4, "small": 1},
    }


def test_hidden_files_and_non_images_are_left_out_and_counted(tmp_path: Path) -> None:
    source = class_folders(tmp_path / "source", {"a": 5, "b": 5})
    (source / "a" / ".DS_Store").write_bytes(b"\0")
    (source / "a" / "notes.txt").write_text("x")
    (source / "b" / "empty.jpg").write_bytes(b"")
    (source / "LICENSE").write_text("license")
    result = run_mobitune(
        "data",
        "split",
        str(source),
        str(tmp_path / "out"),
        "--valid",
        "1",
        "--test",
        "1",
        root=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Left out 4 file(s) of the source" in result.stdout
    assert "train 6, valid 2, test 2 images (copied)" in result.stdout
    assert not any(
        p.name in (".DS_Store", "notes.txt", "empty.jpg") for p in (tmp_path / "out").rglob("*")
    )


def test_non_empty_destination_needs_force(tmp_path: Path) -> None:
    source = class_folders(tmp_path / "source", {"a": 5, "b": 5})
    destination = tmp_path / "out"
    (destination / "train" / "stale").mkdir(parents=True)
    (destination / "notes.md").write_text("mine")
    arguments = ["data", "split", str(source), str(destination), "--valid", "1", "--test", "1"]

    refused = run_mobitune(*arguments, root=tmp_path)
    assert refused.returncode == 2
    assert "is not empty" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (destination / "train" / "stale").is_dir()

    forced = run_mobitune(*arguments, "--force", root=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert not (destination / "train" / "stale").exists()
    assert (destination / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in destination.iterdir()) == [
        "notes.md",
        "split.json",
        "test",
        "train",
        "valid",
    ]


def test_link_makes_hard_links(tmp_path: Path) -> None:
    source = class_folders(tmp_path / "source", {"a": 4, "b": 4})
    split_dataset(source, tmp_path / "out", valid=1, test=1, link=True)
    copied = next((tmp_path / "out" / "valid" / "a").iterdir())
    assert copied.stat().st_ino == (source / "a" / copied.name).stat().st_ino


@pytest.mark.parametrize(
    ("layout", "destination", "words"),
    [
        ({"a": 3, "b": 10}, "out", "Too few images to split in 1 class(es)"),
        ({"a": 10}, "out", "holds 1 class folder(s); a split needs at least two"),
        ({"a": 10, "b": 10}, "source/inside", "overlaps the source"),
        ({"train": 10, "valid": 10}, "out", "looks split already"),
    ],
)
def test_bad_splits_are_refused_before_writing(
    tmp_path: Path, layout: dict[str, int], destination: str, words: str
) -> None:
    source = class_folders(tmp_path / "source", layout)
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        split_dataset(source, tmp_path / destination, valid=2, test=1)
    assert not (tmp_path / "out").exists()


def test_failed_link_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    import errno

    def cross_device(source, target, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    source = class_folders(tmp_path / "source", {"a": 4, "b": 4})
    with pytest.raises(DataError, match="different file systems.*Drop --link to copy"):
        split_dataset(source, tmp_path / "out", valid=1, test=1, link=True)
    assert not (tmp_path / "out").exists()
