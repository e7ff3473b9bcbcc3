"""Making datasets in mobitune's layout: split a folder, write the quickstart demo, download.

- `split_dataset(SRC, DST)`: from a folder with one sub-folder per class, write
  DST/train, DST/valid and DST/test the way the seed tutorial did (per class: N valid,
  M test, the rest train), by copying or hard-linking; SRC is never changed. Per class,
  the files are listed sorted by name, then shuffled by a `random.Random` seeded with
  the seed and the class name, so the same seed gives the same split on any machine
  and a class's split does not depend on the other classes. DST/split.json records
  what went where.
- `quickstart_dataset(DST)`: an offline demo dataset built from the handwritten digits
  that ship inside scikit-learn (`sklearn.datasets.load_digits`), upscaled and written
  as RGB PNG files, with a fixed split.
- `download_dataset("sign-language-digits", DST)`: fetches the seed tutorial's dataset
  from its public repository and splits it; without network it fails within the
  timeout, saying how to proceed offline.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mobitune.data import IMAGE_EXTENSIONS, SPLITS
from mobitune.datacheck import Problem, classify_file, display_name, hidden_reason
from mobitune.errors import DataError, MobituneError
from mobitune.paths import project_root

SPLIT_MANIFEST = "split.json"
QUICKSTART_MANIFEST = "quickstart.json"
DEFAULT_VALID = 30
DEFAULT_TEST = 5
DEFAULT_DOWNLOAD_TIMEOUT = 30.0
# A zip member bigger than this in total is refused (a corrupt or hostile archive).
MAX_EXTRACTED_BYTES = 4 * 1024**3

Progress = Callable[[str], None]


def _no_progress(message: str) -> None:
    """The default progress callback: stay quiet."""


# -- destinations ---------------------------------------------------------------------------


def _check_destination(destination: Path, force: bool, what: str) -> None:
    """Refuse a destination that is a file, or a non-empty folder without `force`."""
    if destination.exists() and not destination.is_dir():
        raise DataError(f"Destination {str(destination)!r} exists and is not a folder.")
    if destination.is_dir() and not force:
        entries = sorted(entry.name for entry in destination.iterdir())
        if entries:
            shown = ", ".join(display_name(name) for name in entries[:5])
            more = f", ... ({len(entries) - 5} more)" if len(entries) > 5 else ""
            raise DataError(
                f"Destination {str(destination)!r} is not empty ({shown}{more}). Choose an "
                f"empty or new folder, or pass --force to replace its {what} (other files in "
                "it are kept)."
            )


@contextlib.contextmanager
def _staging_folder(destination: Path) -> Iterator[Path]:
    """A hidden folder inside `destination` to build into; removed afterwards.

    Building beside the final folders, then renaming them into place, means an error
    half-way (a full disk, Ctrl-C) never leaves a half-written split behind.
    """
    created = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mobitune-staging-", dir=destination))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # leave no empty folder behind
            with contextlib.suppress(OSError):
                destination.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, destination: Path, names: list[str]) -> None:
    """Replace destination/<name> by staging/<name> for each name."""
    for name in names:
        target = destination / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(staging / name, target)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# -- split ----------------------------------------------------------------------------------


@dataclass
class SplitPlan:
    """Which files of SRC go to which split, per class, and what was left out."""

    source: Path
    assignment: dict[str, dict[str, list[Path]]]
    left_out: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: {name: len(files) for name, files in classes.items()}
            for split, classes in self.assignment.items()
        }


@dataclass
class SplitResult:
    """What `split_dataset` wrote."""

    destination: Path
    counts: dict[str, dict[str, int]]
    left_out: list[Problem]
    linked: bool

    def totals(self) -> dict[str, int]:
        return {split: sum(classes.values()) for split, classes in self.counts.items()}

    def format_text(self) -> str:
        totals = self.totals()
        how = "hard-linked" if self.linked else "copied"
        lines = [
            f"Wrote {display_name(str(self.destination))}: "
            + ", ".join(f"{split} {totals[split]:,}" for split in SPLITS)
            + f" images ({how}), {len(self.counts['train'])} classes."
        ]
        width = max([5, *(len(display_name(name)) for name in self.counts["train"])])
        lines.append("  " + "class".ljust(width) + "".join(f"{split:>8}" for split in SPLITS))
        for name in self.counts["train"]:
            cells = "".join(f"{self.counts[split][name]:>8}" for split in SPLITS)
            lines.append("  " + display_name(name).ljust(width) + cells)
        lines.append("  " + "total".ljust(width) + "".join(f"{totals[s]:>8}" for s in SPLITS))
        if self.left_out:
            kinds: dict[str, int] = {}
            for problem in self.left_out:
                kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
            detail = ", ".join(f"{kind}: {count}" for kind, count in kinds.items())
            lines.append(f"Left out {len(self.left_out)} file(s) of the source ({detail}):")
            lines += [f"  {problem.describe()}" for problem in self.left_out[:10]]
            if len(self.left_out) > 10:
                lines.append(f"  ... and {len(self.left_out) - 10} more (see {SPLIT_MANIFEST})")
        lines.append(
            "Images were not decoded: `mobitune data check "
            f"{display_name(str(self.destination))}` reports corrupt or unusual ones."
        )
        return "\n".join(lines)


def _validate_amount(name: str, count: int | None, fraction: float | None) -> None:
    if fraction is not None:
        if not 0 < fraction < 1:
            raise MobituneError(f"--{name}-fraction must be between 0 and 1 (got {fraction}).")
    elif count is None or count < 1:
        raise MobituneError(
            f"--{name} must be at least 1 (got {count}): mobitune trains on train/, picks "
            f"models on valid/ and reports on test/, so every split needs images."
        )


def _amount(count: int | None, fraction: float | None, size: int) -> int:
    """Images a split takes from a class of `size`: `count`, or the rounded fraction (>= 1)."""
    if fraction is None:
        return int(count or 0)
    return max(1, math.floor(fraction * size + 0.5))


def _class_seed(seed: int, class_name: str) -> bytes:
    # Bytes, not str: a class folder's name may not be valid UTF-8 on disk.
    return f"mobitune-split/{seed}/".encode() + os.fsencode(class_name)


def _list_class_folder(folder: Path, source: Path) -> tuple[list[Path], list[Problem]]:
    """The image files of a source class folder, sorted by name, and what is left out."""
    usable, left_out = [], []
    for entry in sorted(folder.iterdir(), key=lambda path: path.name):
        if entry.is_dir() and not hidden_reason(entry.name):
            left_out.append(
                Problem(
                    "skipped",
                    "nested_folder",
                    "a folder inside a class folder: not split",
                    display_name(entry.relative_to(source).as_posix()) + "/",
                    entry,
                )
            )
            continue
        # A link to a file elsewhere is copied as that file: the split is self-contained.
        problem = classify_file(entry, source, follow_outside_links=True)
        if problem is None:
            usable.append(entry)
        else:
            left_out.append(problem)
    return usable, left_out


def plan_split(
    source: str | os.PathLike[str],
    valid: int | None = DEFAULT_VALID,
    test: int | None = DEFAULT_TEST,
    valid_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
) -> SplitPlan:
    """Decide the split of a folder of class folders, without writing anything."""
    _validate_amount("valid", valid, valid_fraction)
    _validate_amount("test", test, test_fraction)
    source_path = Path(source).expanduser()
    if not source_path.is_dir():
        raise DataError(
            f"Source {str(source_path)!r} is not a folder. Point it at a folder holding one "
            "sub-folder of images per class."
        )
    source_path = source_path.resolve()
    if any((source_path / split).is_dir() for split in SPLITS):
        raise DataError(
            f"Source {str(source_path)!r} already has train/, valid/ or test/ folders: it "
            "looks split already. Check it with `mobitune data check`, or point the split at "
            "a folder holding one sub-folder of images per class."
        )
    classes: list[Path] = []
    left_out: list[Problem] = []
    for entry in sorted(source_path.iterdir(), key=lambda path: path.name):
        reason = hidden_reason(entry.name)
        if entry.is_dir() and not reason:
            classes.append(entry)
        elif entry.is_file() or entry.is_symlink():
            left_out.append(
                Problem(
                    "skipped",
                    "hidden_file" if reason else "not_in_class_folder",
                    reason or "not in a class folder",
                    display_name(entry.name),
                    entry,
                )
            )
    if len(classes) < 2:
        hint = ""
        if len(classes) == 1 and any(child.is_dir() for child in classes[0].iterdir()):
            hint = f" Did you mean {display_name(str(classes[0]))!r}?"
        raise DataError(
            f"Source {str(source_path)!r} holds {len(classes)} class folder(s); a split needs "
            f"at least two (one sub-folder of images per class).{hint}"
        )
    assignment: dict[str, dict[str, list[Path]]] = {split: {} for split in SPLITS}
    too_small: list[str] = []
    for folder in classes:
        files, skipped = _list_class_folder(folder, source_path)
        left_out += skipped
        valid_count = _amount(valid, valid_fraction, len(files))
        test_count = _amount(test, test_fraction, len(files))
        if valid_count + test_count >= len(files):
            too_small.append(
                f"{display_name(folder.name)} ({len(files)} images for {valid_count} valid + "
                f"{test_count} test)"
            )
            continue
        shuffled = list(files)
        random.Random(_class_seed(seed, folder.name)).shuffle(shuffled)
        picked = {
            "valid": shuffled[:valid_count],
            "test": shuffled[valid_count : valid_count + test_count],
            "train": shuffled[valid_count + test_count :],
        }
        for split in SPLITS:
            assignment[split][folder.name] = sorted(picked[split], key=lambda path: path.name)
    if too_small:
        raise DataError(
            f"Too few images to split in {len(too_small)} class(es) of {str(source_path)!r}: "
            f"{'; '.join(too_small)}. Each class needs at least one training image left: "
            "lower --valid/--test, or use --valid-fraction/--test-fraction when classes "
            "differ in size."
        )
    return SplitPlan(source=source_path, assignment=assignment, left_out=left_out)


def _check_overlap(source: Path, destination: Path) -> None:
    """Refuse a destination inside the source, or one whose splits would hold the source."""
    destination = destination.resolve()
    inside_source = destination == source or destination.is_relative_to(source)
    holds_source = any(source.is_relative_to(destination / split) for split in SPLITS)
    if inside_source or holds_source:
        raise DataError(
            f"Destination {str(destination)!r} overlaps the source {str(source)!r}: choose a "
            "folder outside the source (the source is never changed)."
        )


def _link_or_copy(source: Path, target: Path, link: bool) -> None:
    if not link:
        # Content and timestamps, not permissions: a read-only source gives writable copies.
        shutil.copyfile(source, target)
        stat = source.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno == errno.EXDEV:
            why = "the source and the destination are on different file systems"
        elif error.errno == errno.EPERM:
            why = (
                "the system refuses it (Linux refuses hard links to files you do not own "
                "or cannot write, see fs.protected_hardlinks)"
            )
        else:
            why = error.strerror or str(error)
        raise DataError(
            f"Cannot hard-link {display_name(str(source))}: {why}. Drop --link to copy the "
            "files instead."
        ) from error


def split_dataset(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    valid: int | None = DEFAULT_VALID,
    test: int | None = DEFAULT_TEST,
    valid_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    force: bool = False,
    link: bool = False,
    source_label: str | None = None,
) -> SplitResult:
    """Write DST/train, DST/valid and DST/test from a folder of class folders.

    Copies (or, with `link`, hard-links) the files; never changes `source`. Refuses a
    non-empty destination unless `force`, which replaces its train/, valid/, test/ and
    split.json. `source_label` names the source in split.json (default: its path).
    """
    plan = plan_split(source, valid, test, valid_fraction, test_fraction, seed)
    destination_path = Path(destination).expanduser()
    _check_overlap(plan.source, destination_path)
    _check_destination(destination_path, force, f"train/, valid/, test/ and {SPLIT_MANIFEST}")
    destination_path = destination_path.resolve()
    manifest = {
        "created_by": "mobitune data split",
        "source": source_label or display_name(str(plan.source)),
        "seed": seed,
        "valid": None if valid_fraction is not None else valid,
        "test": None if test_fraction is not None else test,
        "valid_fraction": valid_fraction,
        "test_fraction": test_fraction,
        "link": link,
        "counts": {
            split: {display_name(name): count for name, count in classes.items()}
            for split, classes in plan.counts().items()
        },
        "files": {
            split: {
                display_name(name): [display_name(path.name) for path in files]
                for name, files in classes.items()
            }
            for split, classes in plan.assignment.items()
        },
        "left_out": [problem.to_dict() for problem in plan.left_out],
    }
    with _staging_folder(destination_path) as staging:
        for split, classes in plan.assignment.items():
            for class_name, files in classes.items():
                folder = staging / split / class_name
                folder.mkdir(parents=True)
                for path in files:
                    _link_or_copy(path, folder / path.name, link)
        _write_json(staging / SPLIT_MANIFEST, manifest)
        _move_into_place(staging, destination_path, [*SPLITS, SPLIT_MANIFEST])
    return SplitResult(destination_path, plan.counts(), plan.left_out, link)


# -- quickstart -----------------------------------------------------------------------------

QUICKSTART_IMAGE_SIZE = 64
QUICKSTART_VALID_PER_CLASS = 30
QUICKSTART_TEST_PER_CLASS = 30
# Bump when the images or the split change, so existing copies are rebuilt.
QUICKSTART_FORMAT = 1
_QUICKSTART_README = """\
# mobitune quickstart dataset

Written by `mobitune data quickstart`: the 1,797 handwritten digits that ship inside
scikit-learn (`sklearn.datasets.load_digits`, a copy of the test set of the UCI "Optical
Recognition of Handwritten Digits" data set, E. Alpaydin and C. Kaynak, 1998; CC BY 4.0),
upscaled from 8x8 to {size}x{size} pixels, dark ink on white, saved as RGB PNG files in one
folder per digit. Fixed split, per class: {valid} valid, {test} test, the rest train.
"""


@dataclass
class QuickstartResult:
    """Where the quickstart dataset is, its counts, and whether this call wrote it."""

    destination: Path
    counts: dict[str, dict[str, int]]
    created: bool

    def totals(self) -> dict[str, int]:
        return {split: sum(classes.values()) for split, classes in self.counts.items()}


def default_quickstart_root() -> Path:
    """<project root>/data/quickstart: the default `data.root`."""
    return project_root() / "data" / "quickstart"


def _quickstart_manifest(counts: dict[str, dict[str, int]]) -> dict:
    return {
        "created_by": "mobitune data quickstart",
        "format": QUICKSTART_FORMAT,
        "source": "sklearn.datasets.load_digits",
        "image_size": QUICKSTART_IMAGE_SIZE,
        "valid_per_class": QUICKSTART_VALID_PER_CLASS,
        "test_per_class": QUICKSTART_TEST_PER_CLASS,
        "counts": counts,
    }


def _existing_quickstart(destination: Path, expected: dict) -> bool:
    """True when `destination` already holds this exact quickstart dataset."""
    try:
        found = json.loads((destination / QUICKSTART_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if found != expected:
        return False
    for split, classes in expected["counts"].items():
        for name, count in classes.items():
            folder = destination / split / name
            if not folder.is_dir() or sum(1 for _ in folder.glob("*.png")) != count:
                return False
    return True


def _digit_image(pixels, size: int):
    """One 8x8 digit (values 0..16) as a size x size RGB image, dark ink on white."""
    import numpy as np
    from PIL import Image

    ink = np.clip(pixels / 16.0 * 255.0, 0, 255).astype(np.uint8)
    image = Image.fromarray(255 - ink)  # uint8 2-D: mode L
    image = image.resize((size, size), resample=Image.Resampling.BICUBIC)
    return image.convert("RGB")


def _quickstart_plan() -> tuple[object, dict[str, dict[str, list[int]]]]:
    """The digits and, per split and class, the indices of its images (a fixed split)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    plan: dict[str, dict[str, list[int]]] = {split: {} for split in SPLITS}
    for digit in range(10):
        indices = [int(i) for i in (digits.target == digit).nonzero()[0]]
        random.Random(f"mobitune-quickstart/{digit}").shuffle(indices)
        valid_end = QUICKSTART_VALID_PER_CLASS
        test_end = valid_end + QUICKSTART_TEST_PER_CLASS
        picked = {
            "valid": indices[:valid_end],
            "test": indices[valid_end:test_end],
            "train": indices[test_end:],
        }
        for split in SPLITS:
            plan[split][str(digit)] = sorted(picked[split])
    return digits, plan


def quickstart_dataset(
    destination: str | os.PathLike[str] | None = None, force: bool = False
) -> QuickstartResult:
    """Write the offline demo dataset (no network); a no-op when it is already there."""
    destination_path = Path(destination).expanduser() if destination else default_quickstart_root()
    digits, plan = _quickstart_plan()
    counts = {
        split: {name: len(indices) for name, indices in classes.items()}
        for split, classes in plan.items()
    }
    manifest = _quickstart_manifest(counts)
    if not force and _existing_quickstart(destination_path, manifest):
        return QuickstartResult(destination_path.resolve(), counts, created=False)
    _check_destination(destination_path, force, f"train/, valid/, test/ and {QUICKSTART_MANIFEST}")
    destination_path = destination_path.resolve()
    with _staging_folder(destination_path) as staging:
        for split, classes in plan.items():
            for name, indices in classes.items():
                folder = staging / split / name
                folder.mkdir(parents=True)
                for index in indices:
                    image = _digit_image(digits.images[index], QUICKSTART_IMAGE_SIZE)
                    image.save(folder / f"digit{name}_{index:04d}.png", optimize=False)
        _write_json(staging / QUICKSTART_MANIFEST, manifest)
        (staging / "README.md").write_text(
            _QUICKSTART_README.format(
                size=QUICKSTART_IMAGE_SIZE,
                valid=QUICKSTART_VALID_PER_CLASS,
                test=QUICKSTART_TEST_PER_CLASS,
            ),
            encoding="utf-8",
        )
        _move_into_place(staging, destination_path, [*SPLITS, QUICKSTART_MANIFEST, "README.md"])
    return QuickstartResult(destination_path, counts, created=True)


# -- download -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteDataset:
    """A public dataset `mobitune data download` knows: where it is and how to split it."""

    name: str
    url: str
    repository: str
    # The folder of the archive that holds one sub-folder of images per class.
    images_folder: str
    description: str
    valid: int = DEFAULT_VALID
    test: int = DEFAULT_TEST


REMOTE_DATASETS = {
    "sign-language-digits": RemoteDataset(
        name="sign-language-digits",
        url="https://github.com/ardamavi/Sign-Language-Digits-Dataset/archive/refs/heads/master.zip",
        repository="https://github.com/ardamavi/Sign-Language-Digits-Dataset",
        images_folder="Dataset",
        description="Sign Language Digits (ardamavi/Sign-Language-Digits-Dataset, Apache-2.0): "
        "2,062 images of hand signs for 0-9, the seed tutorial's dataset",
        valid=30,
        test=5,
    ),
}


def _offline_hint(dataset: RemoteDataset) -> str:
    return (
        f"To proceed without network: copy the dataset's class folders (the "
        f"{dataset.images_folder}/<class>/ folders of {dataset.repository}) to this machine "
        "and run "
        f"`mobitune data split SRC DST --valid {dataset.valid} --test {dataset.test} --seed 0`, "
        "or train on the offline demo dataset: `mobitune data quickstart`."
    )


def _resolve_host(host: str, port: int, timeout: float) -> None:
    """Resolve `host` within `timeout` seconds (a socket timeout does not cover DNS)."""
    outcome: dict[str, BaseException | None] = {}

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome["error"] = None
        except OSError as error:
            outcome["error"] = error

    worker = threading.Thread(target=resolve, name="mobitune-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if "error" not in outcome:
        raise TimeoutError(f"resolving {host} took more than {timeout:g} s")
    if outcome["error"] is not None:
        raise outcome["error"]


def fetch_url(url: str, target: Path, timeout: float, progress: Progress = _no_progress) -> int:
    """Download `url` to `target` with a socket timeout; return the byte count.

    Raises OSError subclasses (urllib.error.URLError, TimeoutError) when it cannot.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https") and parsed.hostname:
        _resolve_host(parsed.hostname, parsed.port or 443, timeout)
    written = 0
    with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        next_report = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            written += len(chunk)
            if written >= next_report:
                of_total = f" of {total / 1e6:.1f}" if total else ""
                progress(f"downloaded {written / 1e6:.1f}{of_total} MB")
                next_report = written + (5 << 20)
    return written


def _safe_part(part: str) -> bool:
    return part not in ("", ".", "..") and "\\" not in part and not hidden_reason(part)


def extract_class_folders(archive: Path, images_folder: str, target: Path) -> int:
    """Extract <...>/<images_folder>/<class>/<image> members into target/<class>/<image>.

    Only image files are extracted, under names built from their class and file name
    alone, so a hostile archive cannot write elsewhere. Returns the number of images.
    """
    try:
        with zipfile.ZipFile(archive) as opened:
            members = []
            for info in opened.infolist():
                if info.is_dir():
                    continue
                parts = PurePosixPath(info.filename).parts
                if "__MACOSX" in parts or images_folder not in parts[:-2]:
                    continue
                index = len(parts) - 3
                if parts[index] != images_folder:
                    continue
                class_name, file_name = parts[-2], parts[-1]
                if not (_safe_part(class_name) and _safe_part(file_name)):
                    continue
                if PurePosixPath(file_name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                members.append((info, class_name, file_name))
            if sum(info.file_size for info, _, _ in members) > MAX_EXTRACTED_BYTES:
                raise DataError(
                    f"The archive {str(archive)!r} would extract to more than "
                    f"{MAX_EXTRACTED_BYTES / 1024**3:.0f} GiB of images: refused."
                )
            for info, class_name, file_name in members:
                folder = target / class_name
                folder.mkdir(parents=True, exist_ok=True)
                with opened.open(info) as source, (folder / file_name).open("wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as error:
        raise DataError(f"The downloaded file is not a valid zip archive ({error}).") from error
    return len(members)


def default_download_root(name: str) -> Path:
    """<project root>/data/<name>."""
    return project_root() / "data" / name


def download_dataset(
    name: str,
    destination: str | os.PathLike[str] | None = None,
    url: str | None = None,
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
    valid: int | None = None,
    test: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: Progress = _no_progress,
) -> SplitResult:
    """Download a known public dataset, extract its class folders and split them.

    Fails within about `timeout` seconds when there is no network, saying how to
    proceed offline. `url` replaces the dataset's address (a mirror, or a local
    `file://` copy of the same archive).
    """
    if name not in REMOTE_DATASETS:
        raise MobituneError(
            f"Unknown dataset {name!r}. Known: {', '.join(sorted(REMOTE_DATASETS))}."
        )
    if timeout <= 0:
        raise MobituneError(f"--timeout must be a positive number of seconds (got {timeout}).")
    dataset = REMOTE_DATASETS[name]
    address = url or dataset.url
    destination_path = (
        Path(destination).expanduser() if destination else default_download_root(name)
    )
    # Fail on a bad destination before spending time on the download.
    _check_destination(destination_path, force, f"train/, valid/, test/ and {SPLIT_MANIFEST}")
    with tempfile.TemporaryDirectory(prefix="mobitune-download-") as scratch:
        archive = Path(scratch) / "archive.zip"
        progress(f"Downloading {address}")
        try:
            fetch_url(address, archive, timeout, progress)
        except urllib.error.HTTPError as error:
            raise DataError(
                f"Downloading {dataset.name} from {address} failed: HTTP {error.code} "
                f"{error.reason}. {_offline_hint(dataset)}"
            ) from error
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise DataError(
                f"Cannot download {dataset.name} from {address}: {reason}. This machine "
                f"seems to have no network access, or the address is unreachable (timeout "
                f"{timeout:g} s). {_offline_hint(dataset)}"
            ) from error
        images = Path(scratch) / "images"
        count = extract_class_folders(archive, dataset.images_folder, images)
        if count == 0:
            raise DataError(
                f"The archive from {address} holds no {dataset.images_folder}/<class>/<image> "
                f"files: it does not look like the {dataset.name} dataset."
            )
        progress(f"Extracted {count:,} images; splitting")
        return split_dataset(
            images,
            destination_path,
            valid=dataset.valid if valid is None else valid,
            test=dataset.test if test is None else test,
            seed=seed,
            force=force,
            source_label=address,
        )
