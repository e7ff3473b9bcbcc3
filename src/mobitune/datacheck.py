"""Checking a dataset folder: what it holds and every problem in it, as one report.

`scan_dataset(root)` looks at the folders and files without decoding any image (cheap:
training runs it before it builds a model). `check_dataset(root)` also decodes every
image with `mobitune.data.decode_image`, the decoder training uses, and merges what it
finds with `DataReport.with_decoding` (training merges the failures of its own, single
decoding pass the same way). `mobitune data check` prints the result.

Every problem has a severity:

- fatal: the dataset cannot be used as it is (`mobitune data check` exits 2, training
  stops before building a model): no such folder, a missing split, a dataset not split
  yet, class folders that differ between splits, a single class, a training class or a
  whole split without a usable image;
- skipped: a file left out (hidden files such as `.DS_Store` and `._*`, files that are
  not images, zero-byte files, truncated or corrupt images, links pointing outside the
  dataset folder, files outside class folders, folders nested in class folders);
- converted: an image that is not 8-bit RGB (grayscale, RGBA, palette, CMYK, 16-bit),
  converted to RGB;
- warning: usable, but worth a look: an empty class folder in valid/ or test/, a valid/
  or test/ split holding a single class, a folder that is not a split, a non-ASCII name
  (read fine; some tools and archives mangle them), an image over `max_image_pixels`
  (very large), or one `large_image_factor` times the median pixel count or more (much
  larger than the rest, e.g. a raw photo among thumbnails).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from mobitune.data import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DatasetLayout,
    ImageInfo,
    SplitFiles,
    decode_image,
    describe_decode_error,
)
from mobitune.errors import DataError

FATAL, SKIPPED, CONVERTED, WARNING = "fatal", "skipped", "converted", "warning"
SEVERITIES = (FATAL, SKIPPED, CONVERTED, WARNING)
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}

# Mirrors conf/data/default.yaml (`data.max_image_pixels`, `data.large_image_factor`),
# for callers without a config (the `mobitune data check` command).
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
DEFAULT_LARGE_IMAGE_FACTOR = 16.0

# Names that operating systems and archivers leave in folders; never images.
_SYSTEM_FILES = {
    "thumbs.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    "__macosx": "macOS archive metadata",
}
# Folder names people use for a split, mapped to the name mobitune expects.
_SPLIT_ALIASES = {
    "train": ("training", "trn"),
    "valid": ("val", "validation", "dev", "validate"),
    "test": ("testing", "tst", "eval", "evaluation"),
}
MODE_NAMES = {
    "1": "1-bit black and white",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "La": "grayscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGBX",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit grayscale",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "I;16N": "16-bit grayscale",
    "F": "32-bit float grayscale",
}

log = logging.getLogger(__name__)


def display_name(text: str) -> str:
    """A printable form of a file name, also when it is not valid UTF-8 on disk."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Problem:
    """One finding: its severity, a short kind, what is wrong and where (relative to ROOT).

    `message` does not repeat the path; `describe()` joins them.
    """

    severity: str
    kind: str
    message: str
    path: str | None = None
    file: Path | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "message": self.message}

    def sort_key(self) -> tuple:
        return (_SEVERITY_RANK[self.severity], self.path or "", self.kind)


class UnusableDatasetError(DataError):
    """The dataset cannot be used as it is; `report` holds every problem found."""

    def __init__(self, report: DataReport) -> None:
        super().__init__(report.fatal_message())
        self.report = report


def _relative(path: Path, root: Path) -> str:
    relative = display_name(path.relative_to(root).as_posix())
    return relative + "/" if path.is_dir() and not path.is_symlink() else relative


def _is_within(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False


def hidden_reason(name: str) -> str | None:
    """Why a file or folder name is operating-system clutter, or None for a normal name."""
    if name in (".DS_Store", "._.DS_Store"):
        return "hidden file (macOS Finder metadata)"
    if name.startswith("._"):
        return "hidden file (macOS AppleDouble metadata, not an image)"
    if name.startswith("."):
        return "hidden file"
    system = _SYSTEM_FILES.get(name.lower())
    return f"system file ({system})" if system else None


def classify_file(path: Path, root: Path, follow_outside_links: bool = False) -> Problem | None:
    """Why a file in a class folder is left out (a `skipped` Problem), or None if it is used.

    Cheap: looks at the name, the link target and the size, never at the content.
    With `follow_outside_links`, links to files outside `root` count as those files.
    """
    relative = _relative(path, root)
    reason = hidden_reason(path.name)
    if reason:
        if path.is_dir():
            reason = reason.replace("hidden file", "hidden folder")
        return Problem(SKIPPED, "hidden_file", reason, relative, path)
    if path.is_symlink() and not path.exists():
        return Problem(
            SKIPPED,
            "broken_link",
            f"symbolic link to a missing file ({os.readlink(path)})",
            relative,
            path,
        )
    # The folders above were checked already: only a link itself can lead outside ROOT.
    if not follow_outside_links and path.is_symlink() and not _is_within(path, root):
        return Problem(
            SKIPPED,
            "link_outside_root",
            f"symbolic link to {display_name(str(path.resolve()))}, outside the dataset "
            "folder: left out so the dataset stays self-contained (copy the file in, or "
            "let `mobitune data split --link` make hard links)",
            relative,
            path,
        )
    if not path.is_file():
        return Problem(SKIPPED, "not_a_file", "not a regular file", relative, path)
    extension = path.suffix.lower()
    if extension not in IMAGE_EXTENSIONS:
        named = f"extension {display_name(path.suffix)}" if path.suffix else "no extension"
        return Problem(
            SKIPPED,
            "not_an_image",
            f"not an image file ({named}); images end in {', '.join(sorted(IMAGE_EXTENSIONS))}",
            relative,
            path,
        )
    if path.stat().st_size == 0:
        return Problem(SKIPPED, "empty_file", "zero-byte file", relative, path)
    return None


def _split_alias_hint(split: str, root_entries: Iterable[str]) -> str:
    for name in root_entries:
        if name.lower() in _SPLIT_ALIASES[split] or (name.lower() == split and name != split):
            return f" There is a {display_name(name)}/ folder: rename it to {split}/."
    return ""


def _format_names(names: list[str], limit: int = 8) -> str:
    shown = [display_name(name) for name in names[:limit]]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more


def _list_folder(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda entry: entry.name)


@dataclass
class DataReport:
    """What a dataset folder holds and every problem found in it.

    `files` lists the usable files per split and class folder (only folders that exist).
    `images` maps each decoded file to its `ImageInfo` (None until decoded).
    """

    root: Path
    class_names: list[str] = field(default_factory=list)
    files: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    scan_problems: list[Problem] = field(default_factory=list)
    decode_problems: list[Problem] = field(default_factory=list)
    images: dict[Path, ImageInfo] | None = None
    max_image_pixels: int | None = None
    large_image_factor: float | None = None

    # -- problems -------------------------------------------------------------------------

    @cached_property
    def problems(self) -> list[Problem]:
        """Every problem, fatal first, then skipped, converted and warnings; by path."""
        everything = [*self.scan_problems, *self._count_problems(), *self.decode_problems]
        return sorted(everything, key=Problem.sort_key)

    def of(self, severity: str) -> list[Problem]:
        """The problems of one severity."""
        return [problem for problem in self.problems if problem.severity == severity]

    def count(self, severity: str) -> int:
        return len(self.of(severity))

    @property
    def usable(self) -> bool:
        return not self.of(FATAL)

    @property
    def decoded(self) -> bool:
        return self.images is not None

    def skipped_files(self) -> list[tuple[Path, str]]:
        """(path, reason) of every file or folder left out."""
        return [(p.file, p.message) for p in self.of(SKIPPED) if p.file is not None]

    def _left_out_under(self, folder: str) -> int:
        return sum(
            1
            for p in [*self.scan_problems, *self.decode_problems]
            if p.severity == SKIPPED and p.path and p.path.startswith(folder)
        )

    def _count_problems(self) -> list[Problem]:
        """Problems that follow from how many usable files each split and class has."""
        problems: list[Problem] = []
        train_classes = self.files.get("train")
        if train_classes is not None and len(train_classes) == 1:
            only = next(iter(train_classes))
            problems.append(
                Problem(
                    FATAL,
                    "one_class",
                    f"train/ has a single class folder ({display_name(only)}): a classifier "
                    "needs at least two, one sub-folder per class.",
                    "train/",
                )
            )
        for split, classes in self.files.items():
            if not classes:
                continue
            counts = {name: len(paths) for name, paths in classes.items()}
            for name, count in counts.items():
                if count:
                    continue
                folder = f"{split}/{display_name(name)}/"
                left_out = self._left_out_under(folder)
                why = f" (all {left_out} of its entries are left out)" if left_out else ""
                if split == "train":
                    problems.append(
                        Problem(
                            FATAL,
                            "empty_class",
                            f"class folder with no usable image{why}: the model could never "
                            "learn this class. Add images, or remove the class from every split.",
                            folder,
                        )
                    )
                else:
                    problems.append(
                        Problem(
                            WARNING,
                            "empty_class",
                            f"class folder with no usable image{why}: this class is not "
                            f"measured on {split}/.",
                            folder,
                        )
                    )
            with_images = [name for name, count in counts.items() if count]
            if not with_images:
                problems.append(
                    Problem(FATAL, "no_images", "no usable image in any class folder.", f"{split}/")
                )
            elif split != "train" and len(with_images) == 1 and len(counts) > 1:
                problems.append(
                    Problem(
                        WARNING,
                        "single_class",
                        f"only class {display_name(with_images[0])} has images here: "
                        f"accuracy on {split}/ says little about the other classes.",
                        f"{split}/",
                    )
                )
        return problems

    def fatal_message(self) -> str:
        """One paragraph saying why the dataset cannot be used and how to fix it."""
        fatal = self.of(FATAL)
        if not fatal:
            return ""
        if len(fatal) == 1 and fatal[0].kind == "not_a_folder":
            return fatal[0].message
        if len(fatal) == 1:
            body = fatal[0].describe()
        else:
            body = " ".join(f"({n}) {p.describe()}" for n, p in enumerate(fatal, start=1))
        more = ""
        if len(self.problems) > len(fatal):
            more = f" `mobitune data check {display_name(str(self.root))}` lists every problem."
        return f"Dataset {display_name(str(self.root))!r} cannot be used: {body}{more}"

    def raise_if_unusable(self) -> None:
        if not self.usable:
            raise UnusableDatasetError(self)

    # -- the layout training reads --------------------------------------------------------

    @property
    def layout(self) -> DatasetLayout:
        """The usable files as a `DatasetLayout` (raises if the dataset is unusable)."""
        self.raise_if_unusable()
        splits = {}
        for split in SPLITS:
            files = SplitFiles()
            for label, name in enumerate(self.class_names):
                files.paths.extend(self.files[split][name])
                files.labels.extend([label] * len(self.files[split][name]))
            splits[split] = files
        return DatasetLayout(self.root, list(self.class_names), splits, report=self)

    # -- decoding -------------------------------------------------------------------------

    def with_decoding(
        self,
        images: Mapping[Path, ImageInfo],
        failures: Mapping[Path, str],
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        large_image_factor: float = DEFAULT_LARGE_IMAGE_FACTOR,
    ) -> DataReport:
        """A copy with what decoding found: failures skipped, conversions and sizes reported."""
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
        if large_image_factor < 0:
            raise ValueError(f"large_image_factor must be >= 0, got {large_image_factor}")
        files = {
            split: {
                name: [p for p in paths if p not in failures] for name, paths in classes.items()
            }
            for split, classes in self.files.items()
        }
        used = {p for classes in files.values() for paths in classes.values() for p in paths}
        infos = {path: info for path, info in images.items() if path in used}
        problems = [
            Problem(SKIPPED, "corrupt", reason, _relative(path, self.root), path)
            for path, reason in failures.items()
        ]
        median_pixels = statistics.median(i.pixels for i in infos.values()) if infos else 0
        typical = _most_common_size(infos.values())
        for path, info in infos.items():
            relative = _relative(path, self.root)
            if info.converted:
                problems.append(
                    Problem(
                        CONVERTED,
                        "converted",
                        f"{MODE_NAMES.get(info.mode, info.mode)} image ({info.mode}), "
                        "converted to RGB",
                        relative,
                        path,
                    )
                )
            if info.pixels > max_image_pixels:
                problems.append(
                    Problem(
                        WARNING,
                        "very_large",
                        f"{info.width}x{info.height} ({info.pixels:,} pixels) is over "
                        f"max_image_pixels ({max_image_pixels:,}): slow to decode and memory "
                        "hungry; it is resized like the others. Downscale it if it belongs.",
                        relative,
                        path,
                    )
                )
            elif (
                large_image_factor
                and median_pixels
                and info.pixels >= large_image_factor * median_pixels
            ):
                problems.append(
                    Problem(
                        WARNING,
                        "much_larger",
                        f"{info.width}x{info.height} has {info.pixels / median_pixels:.0f}x the "
                        f"median pixel count (typical size {typical}): much larger than the "
                        "rest, e.g. a raw photo among prepared images. It is resized like the "
                        "others; check that it belongs.",
                        relative,
                        path,
                    )
                )
        return replace(
            self,
            files=files,
            decode_problems=problems,
            images=infos,
            max_image_pixels=max_image_pixels,
            large_image_factor=large_image_factor,
        )

    # -- output ---------------------------------------------------------------------------

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Usable files per split and class folder."""
        return {
            split: {name: len(paths) for name, paths in classes.items()}
            for split, classes in self.files.items()
        }

    def image_summary(self) -> dict[str, Any]:
        """Sizes, modes and formats of the decoded images (empty before decoding)."""
        if not self.images:
            return {}
        infos = list(self.images.values())
        sizes = Counter((info.width, info.height) for info in infos)
        by_pixels = sorted(infos, key=lambda info: (info.pixels, info.width))
        return {
            "count": len(infos),
            "sizes": [{"size": f"{w}x{h}", "count": n} for (w, h), n in sizes.most_common()],
            "smallest": f"{by_pixels[0].width}x{by_pixels[0].height}",
            "largest": f"{by_pixels[-1].width}x{by_pixels[-1].height}",
            "median_pixels": statistics.median(info.pixels for info in infos),
            "modes": dict(Counter(info.mode for info in infos).most_common()),
            "formats": dict(Counter(str(info.format) for info in infos).most_common()),
        }

    def converted_modes(self) -> dict[str, int]:
        """How many images of each non-RGB mode were converted."""
        if not self.images:
            return {}
        return dict(Counter(i.mode for i in self.images.values() if i.converted).most_common())

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report, JSON-ready (`mobitune data check --json`, data_report.json)."""
        counts = self.split_counts()
        return {
            "root": display_name(str(self.root)),
            "usable": self.usable,
            "decoded": self.decoded,
            "class_names": [display_name(name) for name in self.class_names],
            "sizes": {split: sum(classes.values()) for split, classes in counts.items()},
            "splits": {
                split: {display_name(name): count for name, count in classes.items()}
                for split, classes in counts.items()
            },
            "summary": {severity: self.count(severity) for severity in SEVERITIES},
            "converted_modes": self.converted_modes(),
            "images": self.image_summary(),
            "thresholds": {
                "max_image_pixels": self.max_image_pixels,
                "large_image_factor": self.large_image_factor,
            },
            "fatal": [p.to_dict() for p in self.of(FATAL)],
            "skipped": [p.to_dict() for p in self.of(SKIPPED)],
            "converted": [p.to_dict() for p in self.of(CONVERTED)],
            "warnings": [p.to_dict() for p in self.of(WARNING)],
        }

    def to_json(self, ascii_only: bool = False) -> str:
        """The report as JSON; `ascii_only` escapes non-ASCII names (safe on any terminal)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=ascii_only)

    def summary_line(self) -> str:
        counts = {severity: self.count(severity) for severity in SEVERITIES}
        return (
            f"{counts[FATAL]} fatal, {counts[SKIPPED]} skipped, "
            f"{counts[CONVERTED]} converted, {counts[WARNING]} warning(s)"
        )

    def log_summary(self, logger: logging.Logger = log) -> None:
        """Log one line per problem group (training's view of the report)."""
        for (severity, kind), problems in _grouped(self.problems).items():
            if severity == FATAL:
                continue
            level = logging.INFO if severity == CONVERTED else logging.WARNING
            example = problems[0].describe()
            logger.log(
                level, "Data %s (%s): %d file(s), e.g. %s", severity, kind, len(problems), example
            )

    def format_text(self, limit: int = 10) -> str:
        """The human-readable report `mobitune data check` prints.

        At most `limit` problems of each kind are listed (0: all).
        """
        lines = [f"Dataset: {display_name(str(self.root))}"]
        if self.class_names:
            lines.append(
                f"Classes ({len(self.class_names)}): {_format_names(self.class_names, 30)}"
            )
        counts = self.split_counts()
        if counts:
            lines += ["", *_class_table(counts)]
        summary = self.image_summary()
        if summary:
            sizes = ", ".join(f"{s['size']} ({s['count']})" for s in summary["sizes"][:5])
            if len(summary["sizes"]) > 5:
                sizes += f", ... ({len(summary['sizes']) - 5} more sizes)"
            modes = ", ".join(f"{mode} {n}" for mode, n in summary["modes"].items())
            formats = ", ".join(f"{name} {n}" for name, n in summary["formats"].items())
            lines += [
                "",
                f"Images: {summary['count']} decoded; smallest {summary['smallest']}, "
                f"largest {summary['largest']}",
                f"  sizes: {sizes}",
                f"  modes: {modes}",
                f"  formats: {formats}",
            ]
        elif self.usable:
            lines += ["", "Images: not decoded (structure checked only)"]
        lines += ["", f"Problems: {self.summary_line()}"]
        for (severity, kind), problems in _grouped(self.problems).items():
            shown = problems if limit <= 0 else problems[:limit]
            heading = f"{severity.upper()} {kind} ({len(problems)})"
            lines.append(f"  {heading}")
            lines += [f"    {problem.describe()}" for problem in shown]
            if len(shown) < len(problems):
                lines.append(
                    f"    ... and {len(problems) - len(shown)} more (--limit 0 or --json lists all)"
                )
        lines.append("")
        if self.usable:
            notes = [
                f"{self.count(SKIPPED)} file(s) skipped" if self.count(SKIPPED) else "",
                f"{self.count(CONVERTED)} converted to RGB" if self.count(CONVERTED) else "",
                f"{self.count(WARNING)} warning(s)" if self.count(WARNING) else "",
            ]
            detail = ", ".join(note for note in notes if note)
            lines.append(f"Usable: yes{' (' + detail + ')' if detail else ''}.")
        else:
            lines.append(f"Usable: NO. {self.fatal_message()}")
        return "\n".join(lines)


def _grouped(problems: Iterable[Problem]) -> dict[tuple[str, str], list[Problem]]:
    groups: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        groups.setdefault((problem.severity, problem.kind), []).append(problem)
    return dict(sorted(groups.items(), key=lambda item: (_SEVERITY_RANK[item[0][0]], item[0][1])))


def _most_common_size(infos: Iterable[ImageInfo]) -> str:
    sizes = Counter((info.width, info.height) for info in infos)
    if not sizes:
        return "n/a"
    (width, height), _ = sizes.most_common(1)[0]
    return f"{width}x{height}"


def _class_table(counts: dict[str, dict[str, int]]) -> list[str]:
    splits = [split for split in SPLITS if split in counts]
    names: list[str] = []
    for split in splits:
        names += [name for name in counts[split] if name not in names]
    names.sort()
    width = max([5, *(len(display_name(name)) for name in names)])
    lines = ["  " + "class".ljust(width) + "".join(f"{split:>8}" for split in splits)]
    for name in names:
        cells = "".join(f"{counts[split].get(name, '-'):>8}" for split in splits)
        lines.append("  " + display_name(name).ljust(width) + cells)
    totals = "".join(f"{sum(counts[split].values()):>8}" for split in splits)
    lines.append("  " + "total".ljust(width) + totals)
    return lines


# -- scanning ------------------------------------------------------------------------------


def _scan_root(root: Path, problems: list[Problem]) -> list[str]:
    """Check ROOT's own entries; return the splits present."""
    entries = _list_folder(root)
    names = [entry.name for entry in entries]
    present = [split for split in SPLITS if (root / split).is_dir()]
    if not present:
        candidates = [
            entry.name
            for entry in entries
            if entry.is_dir()
            and not hidden_reason(entry.name)
            and any(child.suffix.lower() in IMAGE_EXTENSIONS for child in entry.iterdir())
        ]
        if candidates:
            problems.append(
                Problem(
                    FATAL,
                    "not_split",
                    f"no train/, valid/ or test/ folder, but {len(candidates)} folder(s) of "
                    f"images ({_format_names(candidates)}): this looks like a dataset that is "
                    f"not split yet. Run `mobitune data split {display_name(str(root))} DST "
                    "--valid 30 --test 5` (or --valid-fraction/--test-fraction) and use DST.",
                )
            )
            return present
    for split in SPLITS:
        if split not in present:
            problems.append(
                Problem(
                    FATAL,
                    "missing_split",
                    f"no {split}/ folder. A dataset needs train/, valid/ and test/, each with "
                    "one sub-folder per class; `mobitune data split SRC DST` makes them from a "
                    f"folder of class folders.{_split_alias_hint(split, names)}",
                    f"{split}/",
                )
            )
    for entry in entries:
        if entry.name in SPLITS or hidden_reason(entry.name) or not entry.is_dir():
            continue
        problems.append(
            Problem(
                WARNING,
                "unknown_folder",
                "not a split (train/, valid/ or test/): ignored.",
                _relative(entry, root),
            )
        )
    return present


def _scan_class_folder(folder: Path, root: Path, problems: list[Problem]) -> list[Path]:
    """Check one class folder's entries; return its usable files."""
    usable: list[Path] = []
    for entry in _list_folder(folder):
        if entry.is_dir() and not hidden_reason(entry.name) and _is_within(entry, root):
            count = sum(1 for path in entry.rglob("*") if path.is_file())
            problems.append(
                Problem(
                    SKIPPED,
                    "nested_folder",
                    f"a folder inside a class folder ({count} file(s) in it): they are not "
                    "used; mobitune reads the files directly in each class folder. Move "
                    "them up if they belong to this class.",
                    _relative(entry, root),
                    entry,
                )
            )
            continue
        problem = classify_file(entry, root)
        if problem is not None:
            problems.append(problem)
            continue
        if not entry.name.isascii():
            problems.append(
                Problem(
                    WARNING,
                    "non_ascii_name",
                    "non-ASCII file name: read fine, but some tools and zip archives mangle "
                    "such names when the dataset is shared.",
                    _relative(entry, root),
                    entry,
                )
            )
        usable.append(entry)
    return usable


def _scan_split(split: str, root: Path, problems: list[Problem]) -> dict[str, list[Path]] | None:
    """Check one split folder; return its usable files per class folder (None: unreadable)."""
    folder = root / split
    if not _is_within(folder, root):
        problems.append(
            Problem(
                FATAL,
                "link_outside_root",
                f"symbolic link to {display_name(str(folder.resolve()))}, outside the dataset "
                "folder. Copy the split into the dataset folder (or hard-link its files).",
                f"{split}/",
            )
        )
        return None
    classes: dict[str, list[Path]] = {}
    for entry in _list_folder(folder):
        reason = hidden_reason(entry.name)
        if entry.is_dir() and not reason:
            if not _is_within(entry, root):
                problems.append(
                    Problem(
                        SKIPPED,
                        "link_outside_root",
                        f"class folder linking to {display_name(str(entry.resolve()))}, outside "
                        "the dataset folder: its files are left out. Copy them in.",
                        _relative(entry, root),
                        entry,
                    )
                )
                classes[entry.name] = []
                continue
            try:
                classes[entry.name] = _scan_class_folder(entry, root, problems)
            except OSError as error:
                problems.append(
                    Problem(
                        FATAL,
                        "unreadable_folder",
                        f"cannot list this folder ({error.strerror or error}).",
                        _relative(entry, root),
                    )
                )
                classes[entry.name] = []
        elif reason:
            if entry.is_dir():
                reason = reason.replace("hidden file", "hidden folder")
            problems.append(Problem(SKIPPED, "hidden_file", reason, _relative(entry, root), entry))
        else:
            problems.append(
                Problem(
                    SKIPPED,
                    "not_in_class_folder",
                    f"a file directly in {split}/, not in a class folder: its class is "
                    "unknown. Move it into the folder of its class.",
                    _relative(entry, root),
                    entry,
                )
            )
    if not classes:
        problems.append(
            Problem(
                FATAL,
                "no_class_folders",
                "no class folders: put each class's images in a sub-folder named after it.",
                f"{split}/",
            )
        )
    return classes


def _class_problems(files: dict[str, dict[str, list[Path]]]) -> tuple[list[str], list[Problem]]:
    """The dataset's class names (train's), and a fatal problem per split that differs."""
    if "train" in files:
        class_names = sorted(files["train"])
    else:
        class_names = sorted({name for classes in files.values() for name in classes})
    problems = []
    for split, classes in files.items():
        if split == "train" or "train" not in files or not classes:
            continue
        only_train = sorted(set(class_names) - set(classes))
        only_split = sorted(set(classes) - set(class_names))
        if only_train or only_split:
            problems.append(
                Problem(
                    FATAL,
                    "class_mismatch",
                    f"class folders differ from train/'s: only in train/: "
                    f"{_format_names(only_train) or 'none'}; only in {split}/: "
                    f"{_format_names(only_split) or 'none'}. Every split needs the same class "
                    "folders (an empty folder will do, with a warning).",
                    f"{split}/",
                )
            )
    for name in class_names:
        if not name.isascii():
            problems.append(
                Problem(
                    WARNING,
                    "non_ascii_name",
                    "non-ASCII class name: works, but some tools mangle such names.",
                    f"train/{display_name(name)}/",
                )
            )
    return class_names, problems


def scan_dataset(root: str | os.PathLike[str]) -> DataReport:
    """Check a dataset folder's structure and files without decoding images."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        problem = Problem(
            FATAL,
            "not_a_folder",
            f"{display_name(str(root_path))!r} "
            f"{'is not a folder' if root_path.exists() else 'does not exist'}. "
            "Point `data.root` at a folder "
            "holding train/, valid/ and test/ (one sub-folder per class in each), e.g. "
            "`data.root=/path/to/dataset`; `mobitune data quickstart` writes a demo dataset "
            "and `mobitune data split SRC DST` splits a folder of class folders.",
        )
        return DataReport(root=root_path, scan_problems=[problem])
    root_path = root_path.resolve()
    problems: list[Problem] = []
    try:
        present = _scan_root(root_path, problems)
        files: dict[str, dict[str, list[Path]]] = {}
        for split in present:
            classes = _scan_split(split, root_path, problems)
            if classes is not None:
                files[split] = classes
    except OSError as error:
        problems.append(
            Problem(FATAL, "unreadable_folder", f"cannot read the dataset folder: {error}")
        )
        return DataReport(root=root_path, scan_problems=problems)
    class_names, class_problems = _class_problems(files)
    return DataReport(
        root=root_path,
        class_names=class_names,
        files=files,
        scan_problems=problems + class_problems,
    )


def decode_files(
    paths: list[Path], num_workers: int = 0, progress: Callable[[int, int], None] | None = None
) -> tuple[dict[Path, ImageInfo], dict[Path, str]]:
    """Decode every file once with `data.decode_image`: (infos, failure reasons)."""

    def decode(path: Path) -> ImageInfo | str:
        try:
            return decode_image(path)[1]
        except Exception as error:  # noqa: BLE001 - any decoder failure means "skip it"
            return describe_decode_error(error)

    workers = num_workers if num_workers > 0 else max(1, os.cpu_count() or 1)
    infos: dict[Path, ImageInfo] = {}
    failures: dict[Path, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (path, result) in enumerate(
            zip(paths, pool.map(decode, paths), strict=True), start=1
        ):
            if isinstance(result, str):
                failures[path] = result
            else:
                infos[path] = result
            if progress is not None:
                progress(done, len(paths))
    return infos, failures


def check_dataset(
    root: str | os.PathLike[str],
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    large_image_factor: float = DEFAULT_LARGE_IMAGE_FACTOR,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DataReport:
    """Scan a dataset folder and decode every image: the full report."""
    report = scan_dataset(root)
    paths = [
        path for classes in report.files.values() for files in classes.values() for path in files
    ]
    infos, failures = decode_files(paths, num_workers, progress)
    return report.with_decoding(infos, failures, max_image_pixels, large_image_factor)
