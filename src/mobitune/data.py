"""Reading an image-folder dataset into tf.data pipelines.

Layout: ROOT/{train,valid,test}/<class name>/<image files>. Class names come from the
sub-folder names, sorted, and must be the same in the three splits. Which files are used
and what makes a dataset unusable is decided by `mobitune.datacheck` (the checks that
`mobitune data check` reports); this module decodes the files it lists. Every image is
decoded and resized once (to uint8 arrays kept in memory) by `decode_image`, the one
decoder that the checks use too; files that fail to decode are skipped and reported. The
pipelines apply `mobilenet.preprocess_input` per batch, shuffle only the training split
(seeded, reshuffled each epoch) and prefetch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobitune.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf
    from PIL import Image

    from mobitune.datacheck import DataReport

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# Pillow modes holding more than 8 bits per sample: scaled to 8 bits before the conversion.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass
class SplitFiles:
    """The image files of one split and their integer labels (indices into class names)."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


@dataclass
class DatasetLayout:
    """What a dataset folder holds: its classes and the files of each split.

    `report` is the structural check (`mobitune.datacheck.DataReport`) it came from.
    """

    root: Path
    class_names: list[str]
    splits: dict[str, SplitFiles]
    report: DataReport | None = field(default=None, repr=False, compare=False)

    def fingerprint(self) -> str:
        """A short hash of the file list and sizes: equal fingerprints, same data files."""
        digest = hashlib.sha256()
        for split in SPLITS:
            for path in self.splits[split].paths:
                relative = path.relative_to(self.root).as_posix()
                digest.update(
                    f"{relative}\0{path.stat().st_size}\n".encode(errors="surrogateescape")
                )
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ImageInfo:
    """What decoding learnt about one file: its size, its own mode and its format."""

    width: int
    height: int
    mode: str
    format: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def converted(self) -> bool:
        """True when the file is not 8-bit RGB and was converted to it."""
        return self.mode != "RGB"


@dataclass
class SplitArrays:
    """Decoded images of one split: uint8 (N, size, size, 3), labels, source paths and infos."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    infos: list[ImageInfo] = field(default_factory=list)


@dataclass
class SkippedFile:
    """A file left out of training, and why."""

    path: Path
    reason: str


@dataclass
class LoadedData:
    """Everything training needs from the dataset, and the report of what was left out."""

    layout: DatasetLayout
    arrays: dict[str, SplitArrays]
    skipped: list[SkippedFile]
    report: DataReport | None = None

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
    """List a dataset folder's classes and files, or raise `DataError` saying what is wrong.

    Runs the structural checks of `mobitune data check` (no decoding): hidden files,
    non-images, zero-byte files and links out of the folder are left out; an unusable
    structure raises `mobitune.datacheck.UnusableDatasetError` (a `DataError`) carrying
    the report.
    """
    # datacheck builds on this module's decoder, so it is imported here, not at the top.
    from mobitune import datacheck

    report = datacheck.scan_dataset(root)
    report.raise_if_unusable()
    return report.layout


def describe_decode_error(error: BaseException) -> str:
    """A short, path-free reason why a file could not be decoded."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not a readable image (Pillow cannot identify its format)"
    if isinstance(error, Image.DecompressionBombError):
        return f"too many pixels to decode safely ({error})"
    text = str(error).strip() or type(error).__name__
    if "truncated" in text.lower():
        return f"truncated image ({text})"
    return f"corrupt image data ({type(error).__name__}: {text})"


def decode_image(path: Path) -> tuple[Image.Image, ImageInfo]:
    """Decode one file fully to an 8-bit RGB Pillow image, and say what it was.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB
    (transparency is composited onto white). Raises OSError / ValueError (from
    Pillow) for files that are not readable images, truncated ones included.
    """
    from PIL import Image

    with Image.open(path) as opened:
        opened.load()  # decode fully now, so truncated files fail here
        info = ImageInfo(opened.width, opened.height, opened.mode, opened.format)
        image: Image.Image = opened
        if image.mode in HIGH_BIT_DEPTH_MODES:
            # 16/32-bit grayscale: scale to 8 bits before the RGB conversion.
            array = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            # Composite transparency onto white rather than leaving arbitrary hidden colours.
            rgba = image.convert("RGBA")
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.split()[-1])
            image = background
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image is opened:
            image = opened.copy()  # outlive the closed file
        return image, info


def read_image(
    path: Path, image_size: int, interpolation: str = "bilinear"
) -> tuple[np.ndarray, ImageInfo]:
    """Decode one file to a (image_size, image_size, 3) uint8 RGB array, with its info."""
    from PIL import Image

    resample = getattr(Image.Resampling, interpolation.upper())
    image, info = decode_image(path)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), resample=resample)
    return np.asarray(image, dtype=np.uint8), info


def load_image(path: Path, image_size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Decode one image file to a (image_size, image_size, 3) uint8 RGB array.

    Raises OSError / ValueError (from Pillow) for files that are not readable images.
    """
    return read_image(path, image_size, interpolation)[0]


def _worker_count(configured: int) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


def load_split(
    files: SplitFiles,
    image_size: int,
    interpolation: str = "bilinear",
    num_workers: int = 0,
) -> tuple[SplitArrays, list[SkippedFile]]:
    """Decode and resize every file of a split once; unreadable files are skipped."""
    # Each image is written straight into its row: the split is never held twice.
    image_array = np.empty((len(files.paths), image_size, image_size, 3), np.uint8)

    def decode(index: int, path: Path) -> ImageInfo | SkippedFile:
        try:
            image_array[index], info = read_image(path, image_size, interpolation)
        except Exception as error:  # noqa: BLE001 - any decoder failure means "skip it"
            return SkippedFile(path=path, reason=describe_decode_error(error))
        return info

    with ThreadPoolExecutor(max_workers=_worker_count(num_workers)) as pool:
        decoded = list(pool.map(decode, range(len(files.paths)), files.paths))
    labels, paths, infos, skipped = [], [], [], []
    for index, (path, label, result) in enumerate(
        zip(files.paths, files.labels, decoded, strict=True)
    ):
        if isinstance(result, SkippedFile):
            log.warning("Skipping unreadable image %s (%s)", path, result.reason)
            skipped.append(result)
            continue
        if len(paths) != index:  # close the gap a skipped file left, in place
            image_array[len(paths)] = image_array[index]
        infos.append(result)
        labels.append(label)
        paths.append(path)
    arrays = SplitArrays(
        image_array[: len(paths)], np.asarray(labels, dtype=np.int32), paths, infos
    )
    return arrays, skipped


def load_data(data_cfg: Any, layout: DatasetLayout | None = None) -> LoadedData:
    """Decode the dataset described by the `data` config group (discovered unless given).

    Files that fail to decode are skipped; the returned `report` merges them with the
    structural check. Raises `DataError` (an `UnusableDatasetError` carrying the report)
    when what is left cannot train a classifier, e.g. a class with no readable image.
    """
    interpolation = str(data_cfg.interpolation)
    if interpolation not in INTERPOLATIONS:
        raise ConfigError("data.interpolation", interpolation, f"one of {list(INTERPOLATIONS)}")
    if layout is None or layout.report is None:
        layout = discover_dataset(data_cfg.root if layout is None else layout.root)
    arrays: dict[str, SplitArrays] = {}
    decode_failures: dict[Path, str] = {}
    infos: dict[Path, ImageInfo] = {}
    for split in SPLITS:
        split_arrays, split_skipped = load_split(
            layout.splits[split],
            int(data_cfg.image_size),
            interpolation,
            int(data_cfg.get("num_workers", 0) or 0),
        )
        arrays[split] = split_arrays
        decode_failures.update({item.path: item.reason for item in split_skipped})
        infos.update(zip(split_arrays.paths, split_arrays.infos, strict=True))
    from mobitune import datacheck

    report = layout.report.with_decoding(
        infos,
        decode_failures,
        max_image_pixels=int(
            data_cfg.get("max_image_pixels", datacheck.DEFAULT_MAX_IMAGE_PIXELS)
            or datacheck.DEFAULT_MAX_IMAGE_PIXELS
        ),
        large_image_factor=float(
            data_cfg.get("large_image_factor", datacheck.DEFAULT_LARGE_IMAGE_FACTOR) or 0
        ),
    )
    report.log_summary(log)
    report.raise_if_unusable()
    skipped = [SkippedFile(path=path, reason=reason) for path, reason in report.skipped_files()]
    return LoadedData(layout=layout, arrays=arrays, skipped=skipped, report=report)


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
    augment: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
) -> tf.data.Dataset:
    """A batched, preprocessed, prefetched tf.data pipeline over decoded images.

    With `shuffle`, the order changes every epoch but is fixed by `seed`. `augment`
    (see `augmentation.make_augmenter`) transforms the batched (pixels, labels) dataset
    before preprocessing; pass it for the training split only.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.labels))
    if shuffle:
        dataset = dataset.shuffle(
            buffer_size=len(arrays.labels), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size)
    if augment is not None:
        dataset = augment(dataset)
    dataset = dataset.map(
        lambda images, labels: preprocess_batch(images, labels, num_classes),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_sizes(data: LoadedData) -> dict[str, int]:
    """Number of usable images per split."""
    return {split: len(data.arrays[split].labels) for split in SPLITS}
