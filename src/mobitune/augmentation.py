"""Seeded data augmentation of the training split (`data.augmentation`).

Random flips, rotations, zooms, shifts, brightness and contrast changes, drawn per image
with TensorFlow's stateless random ops. Each training batch gets its seed from a
`tf.data.Dataset.random` stream that is re-drawn every epoch, so a run sees different
augmentations each epoch, yet the same config and seed give the same images every time,
whatever the parallelism of the pipeline. Only the training split is augmented.

Augmentation turns the frozen-feature cache off: the frozen layers then see a different
image every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mobitune.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")
FILL_MODES = ("reflect", "nearest", "constant", "wrap")
INTERPOLATIONS = ("bilinear", "nearest")
_RANGES = {
    "rotation": ("a fraction of a full turn in [0, 0.5], e.g. 0.05 (up to +-18 degrees)", 0.5),
    "zoom": ("a fraction in [0, 0.9], e.g. 0.1 (scale by 0.9 to 1.1)", 0.9),
    "translation": ("a fraction of the image size in [0, 1], e.g. 0.1", 1.0),
    "brightness": ("a fraction of the pixel range in [0, 1], e.g. 0.1", 1.0),
    "contrast": ("a fraction in [0, 1], e.g. 0.2 (contrast factor 0.8 to 1.2)", 1.0),
}


@dataclass
class AugmentationSpec:
    """The validated `data.augmentation` options."""

    enabled: bool = False
    flip: str = "none"
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    fill_mode: str = "reflect"
    interpolation: str = "bilinear"
    seed: int = 0

    @property
    def geometric(self) -> bool:
        return self.rotation > 0 or self.zoom > 0 or self.translation > 0


def augmentation_spec(data_cfg: Any, default_seed: int = 0) -> AugmentationSpec:
    """Check `data.augmentation` and resolve it; absent or disabled gives a disabled spec.

    Raises ConfigError naming the key, the value and what is valid.
    """
    augmentation_cfg = data_cfg.get("augmentation") if hasattr(data_cfg, "get") else None
    if not augmentation_cfg:
        return AugmentationSpec(enabled=False, seed=default_seed)
    enabled = augmentation_cfg.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("data.augmentation.enabled", enabled, "true or false")
    flip = str(augmentation_cfg.get("flip", "none")).lower()
    if flip not in FLIPS:
        raise ConfigError("data.augmentation.flip", flip, f"one of {list(FLIPS)}")
    values = {}
    for name, (expected, limit) in _RANGES.items():
        raw = augmentation_cfg.get(name, 0.0)
        try:
            value = float(raw if raw is not None else 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"data.augmentation.{name}", raw, expected) from None
        if not 0.0 <= value <= limit or math.isnan(value):
            raise ConfigError(f"data.augmentation.{name}", raw, expected)
        values[name] = value
    fill_mode = str(augmentation_cfg.get("fill_mode", "reflect")).lower()
    if fill_mode not in FILL_MODES:
        raise ConfigError("data.augmentation.fill_mode", fill_mode, f"one of {list(FILL_MODES)}")
    interpolation = str(augmentation_cfg.get("interpolation", "bilinear")).lower()
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            "data.augmentation.interpolation", interpolation, f"one of {list(INTERPOLATIONS)}"
        )
    raw_seed = augmentation_cfg.get("seed")
    try:
        seed = int(default_seed if raw_seed is None else raw_seed)
    except (TypeError, ValueError):
        raise ConfigError("data.augmentation.seed", raw_seed, "an integer") from None
    spec = AugmentationSpec(
        enabled=enabled,
        flip=flip,
        fill_mode=fill_mode,
        interpolation=interpolation,
        seed=seed,
        **values,
    )
    if spec.enabled and flip == "none" and not any(values.values()):
        raise ConfigError(
            "data.augmentation",
            "enabled with nothing to do",
            "at least one of flip, rotation, zoom, translation, brightness or contrast",
            "Set e.g. `data.augmentation.flip=horizontal`, or `data.augmentation.enabled=false`.",
        )
    return spec


def _transform_matrices(spec: AugmentationSpec, seed: tf.Tensor, batch: int, height, width):
    """Per-image projective transforms (output pixel -> input pixel), rotation about the
    centre, then zoom, then shift, as ImageProjectiveTransformV3 takes them (8 numbers)."""
    import tensorflow as tf

    rotation_seed, zoom_seed, shift_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    angle = tf.random.stateless_uniform([batch], rotation_seed, -spec.rotation, spec.rotation) * (
        2.0 * math.pi
    )
    scale = tf.random.stateless_uniform([batch], zoom_seed, 1.0 - spec.zoom, 1.0 + spec.zoom)
    shift = tf.random.stateless_uniform([batch, 2], shift_seed, -spec.translation, spec.translation)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    shift_x = shift[:, 0] * width
    shift_y = shift[:, 1] * height
    centre_x = (width - 1.0) / 2.0
    centre_y = (height - 1.0) / 2.0
    # Forward: out = scale * R(angle) (in - centre) + centre + shift; invert it.
    cos = tf.cos(angle) / scale
    sin = tf.sin(angle) / scale
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    source_x = centre_x + shift_x
    source_y = centre_y + shift_y
    a2 = centre_x - (a0 * source_x + a1 * source_y)
    b2 = centre_y - (b0 * source_x + b1 * source_y)
    zeros = tf.zeros_like(angle)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_images(images: tf.Tensor, seed: tf.Tensor, spec: AugmentationSpec) -> tf.Tensor:
    """Augment a batch of (N, H, W, 3) pixels in [0, 255]; returns float32 in [0, 255].

    Deterministic in `seed` (a shape-[2] integer tensor): the same seed, the same output.
    """
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=5))
    if spec.flip in ("horizontal", "horizontal_and_vertical"):
        images = tf.image.stateless_random_flip_left_right(images, seeds[0])
    if spec.flip in ("vertical", "horizontal_and_vertical"):
        images = tf.image.stateless_random_flip_up_down(images, seeds[1])
    if spec.geometric:
        transforms = _transform_matrices(spec, seeds[2], batch, height, width)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.stack([height, width]),
            fill_value=0.0,
            interpolation=spec.interpolation.upper(),
            fill_mode=spec.fill_mode.upper(),
        )
    if spec.brightness > 0:
        delta = tf.random.stateless_uniform(
            [batch, 1, 1, 1], seeds[3], -spec.brightness, spec.brightness
        )
        images = images + delta * 255.0
    if spec.contrast > 0:
        factor = tf.random.stateless_uniform(
            [batch, 1, 1, 1], seeds[4], 1.0 - spec.contrast, 1.0 + spec.contrast
        )
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = (images - mean) * factor + mean
    return tf.clip_by_value(images, 0.0, 255.0)


def make_augmenter(spec: AugmentationSpec):
    """A function turning a batched (images, labels) dataset into an augmented one.

    Pass it as `data.make_dataset(..., augment=...)` for the training split. Returns None
    when `spec` is disabled.
    """
    if not spec.enabled:
        return None

    def augment(dataset: tf.data.Dataset) -> tf.data.Dataset:
        import tensorflow as tf

        # A new stream of seeds each epoch (each new iterator), the same streams each run.
        seeds = tf.data.Dataset.random(seed=spec.seed, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, seed: (augment_images(batch[0], seed, spec), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    return augment
