"""`mobitune data download`: extraction and split of a repository archive; offline failure."""

from __future__ import annotations

import io
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_mobitune
from mobitune.datasets import download_dataset
from mobitune.errors import DataError

TOP = "Sign-Language-Digits-Dataset-master"


def jpeg_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(10, 10, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def repository_zip(path: Path, classes: int = 3, per_class: int = 8) -> Path:
    """A zip laid out like GitHub's archive of ardamavi/Sign-Language-Digits-Dataset."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{TOP}/README.md", "# Sign Language Digits Dataset")
        archive.writestr(f"{TOP}/Examples/example_0.JPG", jpeg_bytes(99))
        for digit in range(classes):
            archive.writestr(f"{TOP}/Dataset/{digit}/", "")
            for index in range(per_class):
                archive.writestr(
                    f"{TOP}/Dataset/{digit}/IMG_{digit}{index:03d}.JPG", jpeg_bytes(index)
                )
        archive.writestr(f"__MACOSX/{TOP}/Dataset/0/._IMG_0000.JPG", b"\0\5\26\7")
        archive.writestr(f"{TOP}/Dataset/../evil.JPG", jpeg_bytes(1))
        archive.writestr(f"{TOP}/Dataset/0/../../../evil.JPG", jpeg_bytes(2))
    return path


def test_download_extracts_and_splits_a_repository_archive(tmp_path: Path) -> None:
    archive = repository_zip(tmp_path / "master.zip")
    destination = tmp_path / "project" / "data" / "sign-language-digits"
    result = download_dataset(
        "sign-language-digits", destination, url=archive.as_uri(), valid=2, test=1
    )
    assert result.counts == {
        "train": {"0": 5, "1": 5, "2": 5},
        "valid": {"0": 2, "1": 2, "2": 2},
        "test": {"0": 1, "1": 1, "2": 1},
    }
    assert sorted(p.name for p in destination.iterdir()) == ["split.json", "test", "train", "valid"]
    assert not list(tmp_path.rglob("evil.JPG")) and not list(tmp_path.rglob("example_0.JPG"))
    assert archive.as_uri() in (destination / "split.json").read_text()


def test_download_from_the_command_line_uses_the_seed_split(tmp_path: Path) -> None:
    archive = repository_zip(tmp_path / "master.zip", classes=2, per_class=40)
    result = run_mobitune(
        "data", "download", "sign-language-digits", "--url", archive.as_uri(), root=tmp_path
    )
    assert result.returncode == 0, result.stderr
    destination = tmp_path / "data" / "sign-language-digits"
    assert "train 10, valid 60, test 10 images" in result.stdout
    assert len(list((destination / "valid" / "1").iterdir())) == 30


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"<html>rate limited</html>", "not a valid zip archive"),
        (None, "does not look like the sign-language-digits dataset"),
    ],
)
def test_wrong_archives_are_refused(tmp_path: Path, content: bytes | None, words: str) -> None:
    archive = tmp_path / "download.zip"
    if content is None:
        with zipfile.ZipFile(archive, "w") as opened:
            opened.writestr("something-else/README.md", "hello")
    else:
        archive.write_bytes(content)
    with pytest.raises(DataError, match=words):
        download_dataset("sign-language-digits", tmp_path / "out", url=archive.as_uri())
    assert not (tmp_path / "out").exists()


def network_reachable() -> bool:
    try:
        socket.create_connection(("github.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_offline_download_fails_fast_saying_what_to_do(tmp_path: Path) -> None:
    if network_reachable():
        pytest.skip("github.com is reachable: this test checks the offline failure")
    started = time.monotonic()
    result = run_mobitune(
        "data", "download", "sign-language-digits", "--timeout", "5", root=tmp_path
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert elapsed < 30
    assert "Traceback" not in result.stderr
    assert "Cannot download sign-language-digits" in result.stderr
    assert "no network access" in result.stderr
    assert "mobitune data split SRC DST --valid 30 --test 5" in result.stderr
    assert "mobitune data quickstart" in result.stderr
    assert not (tmp_path / "data").exists()
