"""Reading an image-folder dataset into tf.data pipelines.

Layout: ROOT/{train,valid,test}/<class name>/<image files>. Class names come from the
sub-folder names, sorted, and must be the same in the three splits. Every image is
decoded and resized once (to uint8 arrays kept in memory); the pipelines apply
`mobilenet.preprocess_input` per batch, shuffle only the training split (seeded,
reshuffled each epoch) and prefetch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobitune.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass
class SplitFiles:
    """The image files of one split and their integer labels (indices into class names)."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


@dataclass
class DatasetLayout:
    """What a dataset folder holds: its classes and the files of each split."""

    root: Path
    class_names: list[str]
    splits: dict[str, SplitFiles]

    def fingerprint(self) -> str:
        """A short hash of the file list and sizes: equal fingerprints, same data files."""
        digest = hashlib.sha256()
        for split in SPLITS:
            for path in self.splits[split].paths:
                relative = path.relative_to(self.root).as_posix()
                digest.update(f"{relative}\0{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


@dataclass
class SplitArrays:
    """Decoded images of one split: uint8 (N, size, size, 3), labels and source paths."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[Path]


@dataclass
class SkippedFile:
    """A file left out of training because it could not be read as an image."""

    path: Path
    reason: str


@dataclass
class LoadedData:
    """Everything training needs from the dataset."""

    layout: DatasetLayout
    arrays: dict[str, SplitArrays]
    skipped: list[SkippedFile]

    @property
    def class_names(self) -> list[str]:
        return self.layout.class_names

    @property
    def num_classes(self) -> int:
        return len(self.layout.class_names)


def is_image_candidate(path: Path) -> bool:
    """True for a visible file whose extension names an image format."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def discover_dataset(root: str | os.PathLike[str]) -> DatasetLayout:
    """List a dataset folder's classes and files, or raise `DataError` saying what is wrong."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(
            f"`data.root` is {str(root_path)!r}, which is not a folder. Point it at a folder "
            "holding train/, valid/ and test/ (one sub-folder per class in each), e.g. "
            "`data.root=/path/to/dataset`; `mobitune data quickstart` writes a demo dataset and "
            "`mobitune data split SRC DST` splits a folder of class folders."
        )
    root_path = root_path.resolve()
    missing = [split for split in SPLITS if not (root_path / split).is_dir()]
    if missing:
        raise DataError(
            f"Dataset {str(root_path)!r} has no {', '.join(m + '/' for m in missing)} folder. "
            "A dataset needs train/, valid/ and test/, each with one sub-folder per class; "
            "`mobitune data split SRC DST` makes them from a folder of class folders."
        )
    classes_per_split = {
        split: sorted(entry.name for entry in (root_path / split).iterdir() if entry.is_dir())
        for split in SPLITS
    }
    class_names = classes_per_split["train"]
    if len(class_names) < 2:
        raise DataError(
            f"{str(root_path / 'train')!r} holds {len(class_names)} class folder(s); "
            "a classifier needs at least two (one sub-folder per class)."
        )
    for split in ("valid", "test"):
        if classes_per_split[split] != class_names:
            only_train = sorted(set(class_names) - set(classes_per_split[split]))
            only_split = sorted(set(classes_per_split[split]) - set(class_names))
            raise DataError(
                f"Class folders differ between train/ and {split}/ in {str(root_path)!r}: "
                f"only in train/: {only_train or 'none'}; only in {split}/: "
                f"{only_split or 'none'}. Every split needs the same class folders."
            )
    splits: dict[str, SplitFiles] = {}
    for split in SPLITS:
        files = SplitFiles()
        for label, class_name in enumerate(class_names):
            class_dir = root_path / split / class_name
            for path in sorted(class_dir.iterdir()):
                if is_image_candidate(path):
                    files.paths.append(path)
                    files.labels.append(label)
        if not files.paths:
            raise DataError(f"Split {split}/ of {str(root_path)!r} holds no image files.")
        splits[split] = files
    return DatasetLayout(root=root_path, class_names=class_names, splits=splits)


def load_image(path: Path, image_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Decode one image file to a (image_size, image_size, 3) uint8 RGB array.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB.
    Raises OSError / ValueError (from Pillow) for files that are not readable images.
    """
    from PIL import Image

    resample = getattr(Image.Resampling, interpolation.upper())
    with Image.open(path) as image:
        image.load()  # decode fully now, so truncated files fail here
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grayscale: scale to 8 bits before the RGB conversion.
            array = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            # Composite transparency onto white rather than leaving arbitrary hidden colours.
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
            image = background
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), resample=resample)
        return np.asarray(image, dtype=np.uint8)


def _worker_count(configured: int) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


def load_split(
    files: SplitFiles,
    image_size: int,
    interpolation: str = "bilinear",
    num_workers: int = 0,
) -> tuple[SplitArrays, list[SkippedFile]]:
    """Decode and resize every file of a split once; unreadable files are skipped."""

    def decode(path: Path) -> np.ndarray | SkippedFile:
        try:
            return load_image(path, image_size, interpolation)
        except Exception as error:  # noqa: BLE001 - any decoder failure means "skip it"
            return SkippedFile(path=path, reason=f"{type(error).__name__}: {error}")

    with ThreadPoolExecutor(max_workers=_worker_count(num_workers)) as pool:
        decoded = list(pool.map(decode, files.paths))
    images, labels, paths, skipped = [], [], [], []
    for path, label, result in zip(files.paths, files.labels, decoded, strict=True):
        if isinstance(result, SkippedFile):
            log.warning("Skipping unreadable image %s (%s)", path, result.reason)
            skipped.append(result)
            continue
        images.append(result)
        labels.append(label)
        paths.append(path)
    image_array = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return SplitArrays(image_array, np.asarray(labels, dtype=np.int32), paths), skipped


def load_data(data_cfg: Any) -> LoadedData:
    """Discover and decode the dataset described by the `data` config group."""
    interpolation = str(data_cfg.interpolation)
    if interpolation not in INTERPOLATIONS:
        from mobitune.errors import ConfigError

        raise ConfigError("data.interpolation", interpolation, f"one of {list(INTERPOLATIONS)}")
    layout = discover_dataset(data_cfg.root)
    arrays: dict[str, SplitArrays] = {}
    skipped: list[SkippedFile] = []
    for split in SPLITS:
        split_arrays, split_skipped = load_split(
            layout.splits[split],
            int(data_cfg.image_size),
            interpolation,
            int(data_cfg.get("num_workers", 0) or 0),
        )
        if len(split_arrays.labels) == 0:
            raise DataError(
                f"No readable image is left in {split}/ of {str(layout.root)!r}: all "
                f"{len(split_skipped)} files failed to decode (first: {split_skipped[0].reason})."
            )
        arrays[split] = split_arrays
        skipped.extend(split_skipped)
    return LoadedData(layout=layout, arrays=arrays, skipped=skipped)


def preprocess_batch(images: tf.Tensor, labels: tf.Tensor, num_classes: int):
    """MobileNet's own preprocessing (scale to [-1, 1]) and one-hot labels."""
    import keras
    import tensorflow as tf

    images = keras.applications.mobilenet.preprocess_input(tf.cast(images, tf.float32))
    return images, tf.one_hot(labels, num_classes)


def make_dataset(
    arrays: SplitArrays,
    num_classes: int,
    batch_size: int,
    shuffle: bool,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A batched, preprocessed, prefetched tf.data pipeline over decoded images.

    With `shuffle`, the order changes every epoch but is fixed by `seed`.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.labels))
    if shuffle:
        dataset = dataset.shuffle(
            buffer_size=len(arrays.labels), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda images, labels: preprocess_batch(images, labels, num_classes),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_sizes(data: LoadedData) -> dict[str, int]:
    """Number of usable images per split."""
    return {split: len(data.arrays[split].labels) for split in SPLITS}


def class_counts(labels: Sequence[int] | np.ndarray, num_classes: int) -> list[int]:
    """How many images each class has."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()
