"""`mobitune data check` and the checks training shares: a report of every problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_mobitune
from mobitune.datacheck import UnusableDatasetError, check_dataset, scan_dataset
from mobitune.errors import DataError

BAD_NAME = os.fsdecode(b"bad\xff.png")  # not valid UTF-8 on disk


def rgb(size: int = 16, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8))


def save_rgb(path: Path, size: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb(size, seed).save(path)
    return path


def messy_dataset(root: Path, outside: Path) -> Path:
    """A dataset folder with every problem `mobitune data check` detects."""
    cat = root / "train" / "cat"
    for index in range(4):
        save_rgb(cat / f"cat_{index}.png", seed=index)
    save_rgb(cat / "café_ü.png")
    save_rgb(cat / BAD_NAME)
    rgb().convert("L").save(cat / "gray.png")
    rgb().convert("RGBA").save(cat / "rgba.png")
    rgb().convert("P").save(cat / "palette.png")
    rgb().convert("CMYK").save(cat / "cmyk.jpg")
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(cat / "deep.png")
    save_rgb(cat / "big.png", size=80)  # 25x the median pixel count
    save_rgb(cat / "huge.png", size=120)  # over max_image_pixels=10_000
    (cat / "zero.jpg").write_bytes(b"")
    rgb().save(cat / "whole.jpg")
    data = (cat / "whole.jpg").read_bytes()
    (cat / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (cat / "whole.jpg").unlink()
    (cat / "fake.png").write_text("not an image")
    (cat / "notes.txt").write_text("labels by Ann")
    (cat / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (cat / "._cat_0.png").write_bytes(b"\0\5\26\7")
    save_rgb(outside / "elsewhere.png")
    (cat / "link_out.png").symlink_to(outside / "elsewhere.png")
    (cat / "broken.png").symlink_to(cat / "missing.png")
    (cat / "link_in.png").symlink_to(cat / "cat_0.png")  # inside ROOT: fine
    save_rgb(cat / "nested" / "more.png")
    for index in range(4):
        save_rgb(root / "train" / "dog" / f"dog_{index}.png", seed=10 + index)
    (root / "train" / "empty").mkdir()
    save_rgb(root / "train" / "stray.png")
    save_rgb(root / "valid" / "cat" / "cat_v.png")
    (root / "valid" / "dog").mkdir()
    (root / "valid" / "empty").mkdir()
    (root / "valid" / "bird").mkdir()
    (root / "valid" / "bird" / ".DS_Store").write_bytes(b"\0")
    (root / "extra").mkdir()
    (root / "README.md").write_text("a messy dataset")
    return root


EXPECTED = [
    ("fatal", "missing_split", "test/"),
    ("fatal", "empty_class", "train/empty/"),
    ("fatal", "class_mismatch", "valid/"),
    ("skipped", "hidden_file", "train/cat/.DS_Store"),
    ("skipped", "hidden_file", "train/cat/._cat_0.png"),
    ("skipped", "broken_link", "train/cat/broken.png"),
    ("skipped", "corrupt", "train/cat/fake.png"),
    ("skipped", "link_outside_root", "train/cat/link_out.png"),
    ("skipped", "nested_folder", "train/cat/nested/"),
    ("skipped", "not_an_image", "train/cat/notes.txt"),
    ("skipped", "corrupt", "train/cat/truncated.jpg"),
    ("skipped", "empty_file", "train/cat/zero.jpg"),
    ("skipped", "not_in_class_folder", "train/stray.png"),
    ("skipped", "hidden_file", "valid/bird/.DS_Store"),
    ("converted", "converted", "train/cat/cmyk.jpg"),
    ("converted", "converted", "train/cat/deep.png"),
    ("converted", "converted", "train/cat/gray.png"),
    ("converted", "converted", "train/cat/palette.png"),
    ("converted", "converted", "train/cat/rgba.png"),
    ("warning", "unknown_folder", "extra/"),
    ("warning", "non_ascii_name", "train/cat/bad\\xff.png"),
    ("warning", "much_larger", "train/cat/big.png"),
    ("warning", "non_ascii_name", "train/cat/café_ü.png"),
    ("warning", "very_large", "train/cat/huge.png"),
    ("warning", "single_class", "valid/"),
    ("warning", "empty_class", "valid/bird/"),
    ("warning", "empty_class", "valid/dog/"),
    ("warning", "empty_class", "valid/empty/"),
]


def test_report_lists_every_problem_with_its_severity(tmp_path: Path) -> None:
    root = messy_dataset(tmp_path / "messy", tmp_path / "outside")
    report = check_dataset(root, max_image_pixels=10_000, large_image_factor=16)

    found = [(p.severity, p.kind, p.path) for p in report.problems]
    assert found == EXPECTED
    assert not report.usable
    # Usable files: 4 RGB + 2 odd names + 5 converted + big + huge + the link inside ROOT.
    assert report.split_counts() == {
        "train": {"cat": 14, "dog": 4, "empty": 0},
        "valid": {"bird": 0, "cat": 1, "dog": 0, "empty": 0},
    }
    assert report.converted_modes() == {"CMYK": 1, "I;16": 1, "L": 1, "P": 1, "RGBA": 1}
    skipped = {p.path: p.message for p in report.of("skipped")}
    assert skipped["train/cat/zero.jpg"] == "zero-byte file"
    assert skipped["train/cat/truncated.jpg"].startswith("truncated image (")
    assert skipped["train/cat/fake.png"] == (
        "not a readable image (Pillow cannot identify its format)"
    )
    assert skipped["train/cat/.DS_Store"] == "hidden file (macOS Finder metadata)"
    assert "outside the dataset folder" in skipped["train/cat/link_out.png"]
    converted = {p.path: p.message for p in report.of("converted")}
    assert converted["train/cat/cmyk.jpg"] == "CMYK image (CMYK), converted to RGB"
    assert converted["train/cat/deep.png"] == "16-bit grayscale image (I;16), converted to RGB"

    assert report.fatal_message() == (
        f"Dataset {str(root)!r} cannot be used: "
        "(1) test/: no test/ folder. A dataset needs train/, valid/ and test/, each with one "
        "sub-folder per class; `mobitune data split SRC DST` makes them from a folder of "
        "class folders. "
        "(2) train/empty/: class folder with no usable image: the model could never learn "
        "this class. Add images, or remove the class from every split. "
        "(3) valid/: class folders differ from train/'s: only in train/: none; only in "
        "valid/: bird. Every split needs the same class folders (an empty folder will do, "
        f"with a warning). `mobitune data check {root}` lists every problem."
    )
    with pytest.raises(UnusableDatasetError) as raised:
        report.raise_if_unusable()
    assert isinstance(raised.value, DataError) and raised.value.report is report

    document = json.loads(report.to_json())
    assert document["summary"] == {"fatal": 3, "skipped": 11, "converted": 5, "warning": 9}
    assert document["converted_modes"]["CMYK"] == 1
    assert {item["path"] for item in document["skipped"]} == {
        path for severity, _, path in EXPECTED if severity == "skipped"
    }
    text = report.format_text(limit=0)
    assert "Usable: NO." in text and "SKIPPED corrupt (2)" in text


def test_structural_scan_decodes_nothing(tmp_path: Path) -> None:
    root = messy_dataset(tmp_path / "messy", tmp_path / "outside")
    report = scan_dataset(root)
    kinds = {p.kind for p in report.problems}
    # Cheap checks only: corrupt files, conversions and sizes need decoding.
    assert not kinds & {"corrupt", "converted", "much_larger", "very_large"}
    assert {"missing_split", "class_mismatch", "empty_class", "empty_file"} <= kinds
    assert report.images is None


def test_usable_dataset_with_warnings(tmp_path: Path) -> None:
    root = tmp_path / "ok"
    for split, count in (("train", 4), ("valid", 2), ("test", 2)):
        for name in ("a", "b"):
            for index in range(count):
                save_rgb(root / split / name / f"{name}{index}.png", seed=index)
    save_rgb(root / "train" / "a" / "photo.png", size=96)
    rgb().convert("L").save(root / "valid" / "b" / "gray.png")
    report = check_dataset(root)
    assert report.usable
    assert [(p.severity, p.kind, p.path) for p in report.problems] == [
        ("converted", "converted", "valid/b/gray.png"),
        ("warning", "much_larger", "train/a/photo.png"),
    ]
    assert report.split_counts()["valid"] == {"a": 2, "b": 3}
    summary = report.image_summary()
    assert summary["sizes"][0] == {"size": "16x16", "count": 17}
    assert summary["largest"] == "96x96" and summary["modes"] == {"RGB": 17, "L": 1}
    assert report.layout.class_names == ["a", "b"]
    # The threshold is a setting: 0 turns the "much larger" warning off.
    assert check_dataset(root, large_image_factor=0).count("warning") == 0


@pytest.mark.parametrize(
    ("build", "kind", "words"),
    [
        (lambda root: None, "not_a_folder", "does not exist. Point `data.root`"),
        (
            lambda root: [save_rgb(root / c / "x.png") for c in ("a", "b")],
            "not_split",
            "looks like a dataset that is not split yet. Run `mobitune data split",
        ),
        (
            lambda root: [
                save_rgb(root / s / "only" / "x.png") for s in ("train", "valid", "test")
            ],
            "one_class",
            "train/: train/ has a single class folder (only): a classifier needs at least two",
        ),
        (
            lambda root: [
                save_rgb(root / s / c / "x.png") for s in ("train", "val", "test") for c in "ab"
            ],
            "missing_split",
            "There is a val/ folder: rename it to valid/.",
        ),
    ],
)
def test_fatal_structures(tmp_path: Path, build, kind: str, words: str) -> None:
    root = tmp_path / "dataset"
    build(root)
    report = scan_dataset(root)
    assert [p.kind for p in report.of("fatal")] == [kind]
    assert words in report.fatal_message()


def test_all_unreadable_training_class_is_fatal_after_decoding(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    for split in ("train", "valid", "test"):
        for name in ("a", "b"):
            save_rgb(root / split / name / "ok.png")
    (root / "train" / "a" / "ok.png").write_bytes(b"garbage, not a PNG")
    assert scan_dataset(root).usable  # structure is fine
    report = check_dataset(root)
    assert [(p.kind, p.path) for p in report.of("fatal")] == [("empty_class", "train/a/")]
    assert "(all 1 of its entries are left out)" in report.fatal_message()


def run_check(*arguments: str, cwd: Path):
    # An ASCII-only terminal: non-ASCII file names must still print.
    return run_mobitune(
        "data", "check", *arguments, root=cwd, timeout=120, PYTHONIOENCODING="ascii"
    )


def test_check_command_exit_codes(tmp_path: Path) -> None:
    usable = tmp_path / "usable"
    for split in ("train", "valid", "test"):
        for name in ("a", "b"):
            save_rgb(usable / split / name / "x.png")
    rgb().convert("CMYK").save(usable / "train" / "a" / "cmyk.jpg")
    result = run_check(str(usable), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usable: yes (1 converted to RGB)." in result.stdout

    messy = messy_dataset(tmp_path / "messy", tmp_path / "outside")
    result = run_check(str(messy), "--max-image-pixels", "10000", "--limit", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    # Non-ASCII names print even on an ASCII terminal.
    assert "train/cat/caf\\xe9_\\xfc.png" in result.stdout
    assert "Usable: NO. Dataset" in result.stdout

    as_json = run_check(str(messy), "--json", cwd=tmp_path)
    assert as_json.returncode == 2
    document = json.loads(as_json.stdout)
    assert document["usable"] is False and len(document["fatal"]) == 3
    assert {"path": "train/cat/café_ü.png", "kind": "non_ascii_name"}.items() <= next(
        item for item in document["warnings"] if item["path"] == "train/cat/café_ü.png"
    ).items()

    missing = run_check(str(tmp_path / "absent"), cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stdout
