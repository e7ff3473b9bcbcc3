"""The frozen-feature cache: compute the frozen layers' output once, train only the tail.

A model built by `model.build_model` is a chain: frozen MobileNet layers, then the
trainable tail (the last `trainable_layers` layers, ending in the Dense head). Frozen
BatchNormalization layers run in inference mode in Keras 3, so the frozen part's output
is a pure function of the image. This module computes it once per dataset and frozen
part, keeps it on disk under `paths.cache_dir`, and hands training a tail model that
shares its layers (and so its weights) with the full model: training the tail trains the
full model in place.

On disk, `<cache dir>/features/<key>/` holds one entry: `meta.json` (what the key was made
of, shapes, sizes), one `<split>.npy` per split and a `last_used` file whose mtime orders
least-recently-used eviction. The key hashes everything the features depend on: the
decoded pixels and labels of every split, the dataset fingerprint, the frozen layers'
architecture and weight values, the image size, interpolation, alpha, the boundary layer,
the stored dtype and the Keras/TensorFlow versions. An entry is written to a temporary
folder and renamed into place under a per-key file lock, so parallel trials that need the
same entry build it once; the others wait and read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobitune.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

    from mobitune.data import LoadedData, SplitArrays

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FEATURES_FOLDER = "features"
LOCKS_FOLDER = "locks"
META_FILE = "meta.json"
LAST_USED_FILE = "last_used"
TEMPORARY_PREFIX = ".tmp-"
DTYPES = ("float32", "float16")
DEFAULT_MAX_GB = 10.0
# How long a trial waits for another process that is building the same entry.
LOCK_TIMEOUT_SECONDS = 3600.0
# Images per forward pass when extracting features (independent of the training batch).
EXTRACTION_BATCH_SIZE = 32
# float16 storage is refused (float32 kept) when rounding moves a batch's features by more
# than this fraction of their largest magnitude, or when values under- or overflow.
FLOAT16_RELATIVE_TOLERANCE = 1e-3
# Features that cannot be stored on disk are held in memory only if they take at most this
# share of the memory available now.
MEMORY_SHARE = 0.4
BYTES_PER_GB = 1024**3


# --------------------------------------------------------------------------- settings


@dataclass
class CacheSettings:
    """The validated `cache` config group."""

    enabled: bool = True
    directory: Path = field(default_factory=lambda: Path(".cache/mobitune"))
    max_bytes: int = int(DEFAULT_MAX_GB * BYTES_PER_GB)
    dtype: str = "float32"


def default_cache_dir() -> Path:
    """`<project root>/.cache/mobitune`, the default of `paths.cache_dir`."""
    from mobitune.paths import project_root

    return project_root() / ".cache" / "mobitune"


def cache_settings(cfg: Any) -> CacheSettings:
    """Read and check the `cache` group (and `paths.cache_dir`) of a run config.

    A config without a `cache` group (e.g. one logged before it existed) gets the defaults.
    Raises ConfigError naming the key for bad values.
    """
    cache_cfg = cfg.get("cache") if hasattr(cfg, "get") else None
    cache_cfg = cache_cfg or {}
    enabled = cache_cfg.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("cache.enabled", enabled, "true or false")
    raw_max = cache_cfg.get("max_gb", DEFAULT_MAX_GB)
    expected = "a size in GiB, e.g. 10 (0 keeps nothing on disk)"
    try:
        max_gb = float(raw_max)
    except (TypeError, ValueError):
        raise ConfigError("cache.max_gb", raw_max, expected) from None
    if not max_gb >= 0 or math.isinf(max_gb):
        raise ConfigError("cache.max_gb", raw_max, expected)
    dtype = str(cache_cfg.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise ConfigError(
            "cache.dtype",
            dtype,
            f"one of {list(DTYPES)}",
            "float16 halves the disk and memory a cache entry takes; mobitune stores float32 "
            "instead when float16 would lose precision.",
        )
    paths_cfg = cfg.get("paths") if hasattr(cfg, "get") else None
    directory = paths_cfg.get("cache_dir") if paths_cfg else None
    return CacheSettings(
        enabled=enabled,
        directory=Path(str(directory)).expanduser() if directory else default_cache_dir(),
        max_bytes=int(max_gb * BYTES_PER_GB),
        dtype=dtype,
    )


# --------------------------------------------------------------------------- model split


@dataclass
class ModelSplit:
    """A model cut at its frozen boundary: frozen part and trainable tail share layers."""

    boundary: str
    frozen: keras.Model
    tail: keras.Model


def split_at_frozen_boundary(model: keras.Model) -> ModelSplit | None:
    """Cut `model` after its last frozen layer; None when nothing before the tail is frozen.

    `frozen` maps images to the boundary layer's output. `tail` starts from a new input of
    that shape and calls the same layer objects as `model`, so their weights are shared:
    fitting `tail` trains `model`.
    """
    import keras

    from mobitune.model import frozen_boundary

    boundary = frozen_boundary(model)
    if boundary is None:
        return None
    boundary_output = model.get_layer(boundary).output
    frozen = keras.Model(model.input, boundary_output, name="mobitune_frozen")
    # Keras 3 builds a Functional model from an intermediate tensor by giving it a fresh
    # input and re-calling the downstream layers on it (new nodes, same layer objects).
    tail = keras.Model(boundary_output, model.output, name="mobitune_tail")
    if any(weight.trainable for weight in frozen.weights):
        raise ValueError(f"Layers up to {boundary!r} are not all frozen.")
    return ModelSplit(boundary=boundary, frozen=frozen, tail=tail)


# --------------------------------------------------------------------------- keys


def _array_digest(arrays: Iterable[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(memoryview(contiguous).cast("B"))
    return digest.hexdigest()


def frozen_part_description(frozen: keras.Model) -> dict[str, Any]:
    """The frozen layers' names, classes and configs, and a digest of their weight values.

    The weight digest identifies ImageNet weights, a weights file, or random weights drawn
    from a seed alike, whatever produced them.
    """
    layers = []
    for layer in frozen.layers[1:]:  # the input layer's auto-generated name is not stable
        config = layer.get_config()
        # A weightless layer (ReLU, padding) may be marked trainable or not before the
        # boundary; either way it computes the same thing.
        for volatile in ("name", "trainable"):
            config.pop(volatile, None)
        layers.append([layer.name, type(layer).__name__, config])
    architecture = json.dumps(layers, sort_keys=True, default=str)
    return {
        "layers": len(layers),
        "architecture_sha256": hashlib.sha256(architecture.encode()).hexdigest(),
        "weights_sha256": _array_digest(weight.numpy() for weight in frozen.weights),
    }


def weights_label(model_cfg: Any, seed: int | None) -> str:
    """A human-readable name of the initial weights, for `mobitune cache info`."""
    weights = model_cfg.get("weights") if hasattr(model_cfg, "get") else None
    if weights is None or str(weights).lower() in ("null", "none", ""):
        return f"random (trainer.seed={seed})"
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(str(weights)).expanduser()
    try:
        stat = path.stat()
        return f"{path.resolve()} ({stat.st_size} bytes, mtime {int(stat.st_mtime)})"
    except OSError:
        return str(path)


def describe_entry(
    data: LoadedData,
    split: ModelSplit,
    cfg: Any,
    dtype: str,
) -> dict[str, Any]:
    """Everything a cache entry's features depend on (hashed into its key) plus labels."""
    import keras
    import tensorflow as tf

    from mobitune.data import SPLITS

    pixels = []
    for name in SPLITS:
        pixels += [data.arrays[name].images, data.arrays[name].labels]
    return {
        "format": FORMAT_VERSION,
        "dataset_root": str(data.layout.root),
        "dataset_fingerprint": data.layout.fingerprint(),
        "pixels_sha256": _array_digest(pixels),
        "split_sizes": {name: len(data.arrays[name].labels) for name in SPLITS},
        "image_size": int(cfg.data.image_size),
        "interpolation": str(cfg.data.get("interpolation", "bilinear")),
        "preprocess": "keras.applications.mobilenet.preprocess_input",
        "alpha": float(cfg.model.alpha),
        # Not the cut layer: models cut at different layers share the frozen part's features.
        "boundary": split.boundary,
        "weights": weights_label(cfg.model, cfg.trainer.get("seed")),
        "frozen": frozen_part_description(split.frozen),
        "feature_shape": [int(size) for size in split.frozen.output.shape[1:]],
        "dtype": dtype,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }


# Keys left out of the hash: they describe the entry but do not change its features
# (the pixel digest covers the data; the weight digest covers the weights).
_UNHASHED = ("dataset_root", "weights")


def entry_key(description: dict[str, Any]) -> str:
    """The cache key of an entry description: 24 hex digits of a SHA-256."""
    hashed = {key: value for key, value in description.items() if key not in _UNHASHED}
    text = json.dumps(hashed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- extraction


class PrecisionLoss(Exception):
    """float16 cannot hold these features faithfully."""


def make_extractor(frozen: keras.Model) -> Callable[[Any], Any]:
    """The frozen part's forward pass in inference mode, compiled once per model."""
    import tensorflow as tf

    return tf.function(lambda images: frozen(images, training=False), reduce_retracing=True)


def extract_features(
    forward: Callable[[Any], Any],
    arrays: SplitArrays,
    out: np.ndarray,
    num_classes: int,
    batch_size: int = EXTRACTION_BATCH_SIZE,
) -> None:
    """Write the frozen part's output for every image of a split into `out`, in order.

    The images go through the training pipeline itself (`data.make_dataset`, unshuffled):
    preprocessing compiled into the same graph as the model would let TensorFlow fuse and
    reorder its arithmetic, changing the features in their last bits, and the tail's
    training-mode BatchNormalization can amplify such differences over the epochs.
    `forward` comes from `make_extractor`. Raises PrecisionLoss when `out` is float16
    and a batch does not survive the rounding.
    """
    from mobitune.data import make_dataset

    start = 0
    for images, _ in make_dataset(arrays, num_classes, batch_size, shuffle=False):
        features = forward(images).numpy()
        if out.dtype == np.float16:
            check_float16(features)
        out[start : start + len(features)] = features
        start += len(features)
    if start != len(out):  # pragma: no cover - the pipeline yields every image once
        raise ValueError(f"Extracted {start} feature rows for {len(out)} images")


def check_float16(features: np.ndarray) -> None:
    """Raise PrecisionLoss if rounding `features` to float16 loses more than the tolerance."""
    with np.errstate(over="ignore"):  # overflow is reported below, as PrecisionLoss
        rounded = features.astype(np.float16)
    if not np.isfinite(rounded).all():
        raise PrecisionLoss("values overflow float16")
    scale = float(np.abs(features).max())
    if scale == 0.0:
        return
    error = float(np.abs(rounded.astype(np.float32) - features).max())
    if error > FLOAT16_RELATIVE_TOLERANCE * scale or scale < 1e-3:
        raise PrecisionLoss(
            f"rounding error {error:.2e} for features of magnitude up to {scale:.2e}"
        )


# --------------------------------------------------------------------------- the store


@dataclass
class CacheEntry:
    """One entry on disk, as `mobitune cache info` lists it."""

    key: str
    path: Path
    size_bytes: int
    last_used: float
    created: float
    meta: dict[str, Any]


def _folder_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def _writer_of(name: str) -> tuple[str, int] | None:
    """(host, pid) of the process writing `.tmp-KEY-HOST-PID-UUID`; host names may hold '-'."""
    key_host_pid = name[len(TEMPORARY_PREFIX) :].rpartition("-")[0]
    host_pid = key_host_pid.partition("-")[2]  # keys are hex digests: no '-'
    host, _, pid = host_pid.rpartition("-")
    return (host, int(pid)) if host and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FeatureCache:
    """Cached frozen features under `directory`, bounded to `max_bytes` (LRU eviction).

    Args:
        directory: the cache folder (`paths.cache_dir`); entries live in `features/`.
        max_bytes: the most the entries may take together; None: unbounded.
        lock_timeout: seconds to wait for another process building the same entry.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int | None = None,
        lock_timeout: float = LOCK_TIMEOUT_SECONDS,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.lock_timeout = lock_timeout

    # -- layout

    @property
    def features_dir(self) -> Path:
        return self.directory / FEATURES_FOLDER

    def entry_path(self, key: str) -> Path:
        return self.features_dir / key

    def _lock(self, key: str, timeout: float):
        from filelock import FileLock

        locks = self.directory / LOCKS_FOLDER
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{key}.lock"), timeout=timeout)

    # -- reading

    def _read_entry(self, path: Path) -> CacheEntry | None:
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
            created = (path / META_FILE).stat().st_mtime
        except (OSError, ValueError):
            return None
        try:
            last_used = (path / LAST_USED_FILE).stat().st_mtime
        except OSError:
            last_used = created
        return CacheEntry(
            key=path.name,
            path=path,
            size_bytes=_folder_size(path),
            last_used=last_used,
            created=created,
            meta=meta,
        )

    def entries(self) -> list[CacheEntry]:
        """Complete entries, least recently used first."""
        if not self.features_dir.is_dir():
            return []
        found = []
        for path in self.features_dir.iterdir():
            if path.is_dir() and not path.name.startswith("."):
                entry = self._read_entry(path)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda entry: (entry.last_used, entry.key))

    def incomplete_folders(self) -> list[Path]:
        """Folders of entries being written, or left behind by a process that died."""
        if not self.features_dir.is_dir():
            return []
        return sorted(
            path
            for path in self.features_dir.iterdir()
            if path.is_dir()
            and (path.name.startswith(TEMPORARY_PREFIX) or not (path / META_FILE).is_file())
        )

    def total_bytes(self) -> int:
        return sum(entry.size_bytes for entry in self.entries())

    def _open(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        path = self.entry_path(key)
        entry = self._read_entry(path)
        if entry is None:
            return None
        try:
            arrays = {
                split: np.load(path / f"{split}.npy", mmap_mode="r")
                for split in entry.meta["splits"]
            }
        except (OSError, ValueError, KeyError) as error:
            log.warning("Feature cache entry %s is unreadable (%s); rebuilding it", key, error)
            return None
        for split, info in entry.meta["splits"].items():
            if list(arrays[split].shape) != [info["count"], *entry.meta["feature_shape"]]:
                log.warning("Feature cache entry %s has a wrong shape; rebuilding it", key)
                return None
        (path / LAST_USED_FILE).touch()
        return arrays, entry.meta

    # -- writing

    def get_or_build(
        self,
        key: str,
        description: dict[str, Any],
        counts: dict[str, int],
        fill: Callable[[str, np.ndarray], None],
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
        """The entry's arrays (memory-mapped), its meta, and "hit" or "built".

        `fill(split, out)` writes a split's features into `out` (an array of shape
        (count, *feature_shape) and the described dtype); it may raise PrecisionLoss, and
        the entry is then built again as float32. Raises filelock.Timeout when another
        process holds the entry's lock past `lock_timeout`.
        """
        with self._lock(key, self.lock_timeout):
            opened = self._open(key)
            if opened is not None:
                return opened[0], opened[1], "hit"
            final = self.entry_path(key)
            if final.exists():  # unreadable or incomplete: replace it
                shutil.rmtree(final, ignore_errors=True)
            try:
                meta = self._write(key, description, counts, fill, str(description["dtype"]))
            except PrecisionLoss as error:
                # float32 doubles the entry: it must still fit the limit and the disk.
                needed = sum(counts.values()) * int(np.prod(description["feature_shape"])) * 4
                free = shutil.disk_usage(self.features_dir).free
                limit = free if self.max_bytes is None else min(self.max_bytes, free)
                if needed > limit:
                    raise OSError(
                        f"float16 cannot hold these features ({error}) and as float32 their "
                        f"{format_bytes(needed)} exceed the cache limit or the free disk "
                        f"({format_bytes(limit)})"
                    ) from error
                log.warning(
                    "Feature cache: float16 cannot hold these features (%s); storing float32",
                    error,
                )
                meta = self._write(key, description, counts, fill, "float32")
            opened = self._open(key)
            if opened is None:  # pragma: no cover - just written under the lock
                raise OSError(f"Feature cache entry {key} could not be read back")
        try:
            self.evict(keep={key})
        except OSError as error:  # the entry is built and usable; the limit waits a run
            log.warning("Feature cache: could not evict old entries (%s)", error)
        return opened[0], meta, "built"

    def _write(
        self,
        key: str,
        description: dict[str, Any],
        counts: dict[str, int],
        fill: Callable[[str, np.ndarray], None],
        stored_dtype: str,
    ) -> dict[str, Any]:
        self.features_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.features_dir / (
            f"{TEMPORARY_PREFIX}{key}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        temporary.mkdir()
        try:
            shape = tuple(int(size) for size in description["feature_shape"])
            for split, count in counts.items():
                out = np.lib.format.open_memmap(
                    temporary / f"{split}.npy", mode="w+", dtype=stored_dtype, shape=(count, *shape)
                )
                fill(split, out)
                out.flush()
                del out
            meta = dict(description)
            meta.update(
                {
                    "key": key,
                    "stored_dtype": stored_dtype,
                    "splits": {split: {"count": count} for split, count in counts.items()},
                    "created": time.time(),
                    "host": socket.gethostname(),
                }
            )
            (temporary / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
            (temporary / LAST_USED_FILE).touch()
            os.replace(temporary, self.entry_path(key))
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        return meta

    # -- eviction and removal

    def remove(self, key: str, wait: float = 0.0) -> bool:
        """Delete one entry unless a process holds its lock (building or opening it)."""
        from filelock import Timeout

        lock = self._lock(key, wait)
        try:
            lock.acquire()
        except Timeout:
            return False
        try:
            path = self.entry_path(key)
            if not path.exists():
                return False
            # Rename first, so no reader ever sees a half-deleted entry.
            doomed = self.features_dir / f"{TEMPORARY_PREFIX}removed-{key}-{uuid.uuid4().hex[:8]}"
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            return True
        finally:
            lock.release()

    def evict(self, keep: Iterable[str] = ()) -> list[CacheEntry]:
        """Delete least-recently-used entries until the cache fits `max_bytes`."""
        self.remove_orphans()
        if self.max_bytes is None:
            return []
        keep = set(keep)
        entries = self.entries()
        total = sum(entry.size_bytes for entry in entries)
        evicted = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.key in keep:
                continue
            if self.remove(entry.key):
                total -= entry.size_bytes
                evicted.append(entry)
                log.info(
                    "Feature cache: evicted %s (%s, last used %s) to stay under %s",
                    entry.key,
                    format_bytes(entry.size_bytes),
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)),
                    format_bytes(self.max_bytes),
                )
        return evicted

    def remove_orphans(self) -> list[Path]:
        """Delete temporary folders whose writing process (on this host) is gone."""
        removed = []
        host = socket.gethostname()
        for path in self.incomplete_folders():
            name = path.name
            if not name.startswith(TEMPORARY_PREFIX):
                continue
            writer = _writer_of(name)
            if name.startswith(f"{TEMPORARY_PREFIX}removed-"):
                dead = True
            elif writer is not None and writer[0] == host:
                dead = not _pid_alive(writer[1])
            else:
                try:
                    dead = time.time() - path.stat().st_mtime > 24 * 3600
                except OSError:  # renamed into place (or removed) by its writer meanwhile
                    continue
            if dead:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def clear(
        self, keys: Iterable[str] | None = None, older_than_seconds: float | None = None
    ) -> tuple[list[CacheEntry], list[CacheEntry]]:
        """Remove entries (all, those whose key starts with one of `keys`, and/or those not
        used for `older_than_seconds`). Returns (removed, skipped because in use)."""
        prefixes = list(keys) if keys is not None else None
        now = time.time()
        removed, busy = [], []
        for entry in self.entries():
            if prefixes is not None and not any(entry.key.startswith(p) for p in prefixes):
                continue
            if older_than_seconds is not None and now - entry.last_used < older_than_seconds:
                continue
            (removed if self.remove(entry.key) else busy).append(entry)
        if prefixes is None and older_than_seconds is None:
            self.remove_orphans()
        return removed, busy


def format_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


# --------------------------------------------------------------------------- for training


@dataclass
class CachedFeatures:
    """Frozen features of every split, ready for training the tail."""

    arrays: dict[str, np.ndarray]
    split: ModelSplit
    key: str
    status: str  # "hit", "built" (written to the cache now) or "memory" (not kept on disk)
    seconds: float
    size_bytes: int
    stored_dtype: str
    path: Path | None


@dataclass
class CacheDecision:
    """Whether a run trains on cached features, and why (or why not)."""

    used: bool
    reason: str
    features: CachedFeatures | None = None

    def summary(self) -> dict[str, Any]:
        """What a run logs about the cache."""
        summary: dict[str, Any] = {"used": self.used, "reason": self.reason}
        if self.features is not None:
            summary.update(
                {
                    "status": self.features.status,
                    "hit": self.features.status == "hit",
                    "key": self.features.key,
                    "boundary": self.features.split.boundary,
                    "seconds": self.features.seconds,
                    "size_bytes": self.features.size_bytes,
                    "stored_dtype": self.features.stored_dtype,
                }
            )
        return summary


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _in_memory_features(
    split: ModelSplit, data: LoadedData, counts: dict[str, int], shape: tuple[int, ...]
) -> dict[str, np.ndarray] | None:
    needed = sum(counts.values()) * int(np.prod(shape)) * 4
    available = _available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        return None
    arrays = {}
    forward = make_extractor(split.frozen)
    for name, count in counts.items():
        arrays[name] = np.empty((count, *shape), dtype=np.float32)
        extract_features(forward, data.arrays[name], arrays[name], data.num_classes)
    return arrays


def prepare_features(
    model: keras.Model, data: LoadedData, cfg: Any, augmentation_enabled: bool
) -> CacheDecision:
    """Decide whether the run trains on cached frozen features; load or build them if so.

    Every "no" comes with its reason, logged at INFO level.
    """
    from filelock import Timeout

    settings = cache_settings(cfg)
    if not settings.enabled:
        return _no("cache.enabled=false")
    if augmentation_enabled:
        return _no(
            "data augmentation is on (data.augmentation.enabled=true): the frozen layers see a "
            "differently augmented image every epoch, so their output cannot be cached"
        )
    split = split_at_frozen_boundary(model)
    if split is None:
        return _no("no layer is frozen (model.trainable_layers covers the whole model)")

    started = time.perf_counter()
    description = describe_entry(data, split, cfg, settings.dtype)
    key = entry_key(description)
    counts = {name: len(data.arrays[name].labels) for name in description["split_sizes"]}
    shape = tuple(description["feature_shape"])
    itemsize = np.dtype(settings.dtype).itemsize
    entry_bytes = sum(counts.values()) * int(np.prod(shape)) * itemsize
    cache = FeatureCache(settings.directory, settings.max_bytes)

    forward = make_extractor(split.frozen)

    def fill(name: str, out: np.ndarray) -> None:
        extract_features(forward, data.arrays[name], out, data.num_classes)

    why_not_stored = None
    if entry_bytes > settings.max_bytes:
        why_not_stored = (
            f"its {format_bytes(entry_bytes)} exceed cache.max_gb="
            f"{settings.max_bytes / BYTES_PER_GB:g}"
        )
    else:
        try:
            settings.directory.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(settings.directory).free
        except OSError as error:
            why_not_stored = f"the cache folder {str(settings.directory)!r} is unusable ({error})"
        else:
            existing = cache.entry_path(key).is_dir()
            if not existing and free < entry_bytes * 1.05 + 64 * 1024**2:
                why_not_stored = (
                    f"only {format_bytes(free)} are free in {str(settings.directory)!r}"
                )
    if why_not_stored is None:
        try:
            arrays, meta, status = cache.get_or_build(key, description, counts, fill)
        except Timeout:
            why_not_stored = (
                f"another process held the entry's lock for over {cache.lock_timeout:.0f} s"
            )
        except OSError as error:
            why_not_stored = f"writing it failed ({error})"
        else:
            seconds = time.perf_counter() - started
            features = CachedFeatures(
                arrays=arrays,
                split=split,
                key=key,
                status=status,
                seconds=seconds,
                size_bytes=_folder_size(cache.entry_path(key)),
                stored_dtype=str(meta.get("stored_dtype", settings.dtype)),
                path=cache.entry_path(key),
            )
            log.info(
                "Feature cache %s: entry %s (features of %s, %s %s, %s) in %.1f s, under %s",
                "hit" if status == "hit" else "miss, built",
                key,
                split.boundary,
                "x".join(str(size) for size in shape),
                features.stored_dtype,
                format_bytes(features.size_bytes),
                seconds,
                settings.directory,
            )
            return CacheDecision(True, status, features)

    arrays = _in_memory_features(split, data, counts, shape)
    if arrays is None:
        return _no(f"the features are not kept on disk ({why_not_stored}) and do not fit in memory")
    seconds = time.perf_counter() - started
    size = sum(array.nbytes for array in arrays.values())
    log.info(
        "Feature cache: features of %s computed in memory (%s) in %.1f s, not kept on disk: %s",
        split.boundary,
        format_bytes(size),
        seconds,
        why_not_stored,
    )
    return CacheDecision(
        True,
        f"memory ({why_not_stored})",
        CachedFeatures(arrays, split, key, "memory", seconds, size, "float32", None),
    )


def _no(reason: str) -> CacheDecision:
    log.info("Feature cache not used: %s", reason)
    return CacheDecision(False, reason)


def feature_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    shuffle: bool,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 features, one-hot labels) in the order `data.make_dataset` uses.

    The shuffle runs over indices with the same seeded `shuffle` call as the image
    pipeline, so each epoch's batches hold the same examples as without the cache.
    `features` may be memory-mapped: only each batch's rows are read. The dataset holds
    only a weak reference to `features`: TensorFlow keeps `numpy_function` callables
    alive after the dataset is gone, which would keep every sweep trial's features in
    memory; the caller keeps `features` alive while it iterates.
    """
    import weakref

    import tensorflow as tf

    shape = tuple(int(size) for size in features.shape[1:])
    indices = np.arange(len(labels), dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((indices, np.asarray(labels)))
    if shuffle:
        dataset = dataset.shuffle(buffer_size=len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    features_ref = weakref.ref(features)

    def gather(batch_indices: np.ndarray) -> np.ndarray:
        source = features_ref()
        if source is None:
            raise RuntimeError("feature_dataset: its features array was released")
        return np.asarray(source[batch_indices], dtype=np.float32)

    def load(batch_indices: tf.Tensor, batch_labels: tf.Tensor):
        batch = tf.numpy_function(gather, [batch_indices], tf.float32, stateful=False)
        batch = tf.ensure_shape(batch, (None, *shape))
        return batch, tf.one_hot(batch_labels, num_classes)

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
