"""Data augmentation of the training split: config checks, seeding, the transforms."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from mobitune.augmentation import (
    AugmentationSpec,
    augment_images,
    augmentation_spec,
    make_augmenter,
)
from mobitune.data import SplitArrays, make_dataset
from mobitune.errors import ConfigError


def data_cfg(**augmentation):
    return OmegaConf.create({"augmentation": augmentation})


def test_default_config_is_off_and_valid(compose_config) -> None:
    cfg = compose_config(debug=None)
    spec = augmentation_spec(cfg.data, default_seed=1)
    assert spec.enabled is False
    assert make_augmenter(spec) is None
    assert augmentation_spec(OmegaConf.create({}), default_seed=5) == AugmentationSpec(seed=5)
    # Turning it on alone gives the documented defaults: flip, small rotation and zoom.
    enabled = augmentation_spec(
        compose_config("data.augmentation.enabled=true", debug=None).data, default_seed=1
    )
    assert (enabled.flip, enabled.rotation, enabled.zoom) == ("horizontal", 0.05, 0.1)
    assert enabled.seed == 42  # ${trainer.seed}


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"enabled": True, "flip": "diagonal"}, "data.augmentation.flip"),
        ({"enabled": True, "rotation": -0.1}, "data.augmentation.rotation"),
        ({"enabled": True, "zoom": 2.0}, "data.augmentation.zoom"),
        ({"enabled": True, "contrast": "high"}, "data.augmentation.contrast"),
        ({"enabled": True, "flip": "horizontal", "fill_mode": "mirror"}, "fill_mode"),
        ({"enabled": "yes"}, "data.augmentation.enabled"),
        ({"enabled": True, "flip": "none"}, "data.augmentation"),
    ],
)
def test_bad_options_name_the_key(options, key) -> None:
    with pytest.raises(ConfigError, match=key):
        augmentation_spec(data_cfg(**options))


def images_and_labels(count: int = 12, size: int = 9) -> SplitArrays:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(count, size, size, 3), dtype=np.uint8)
    return SplitArrays(images, np.arange(count, dtype=np.int32) % 3, [])


def epochs_of(dataset, count: int) -> list[np.ndarray]:
    return [np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(count)]


def test_augmentation_is_seeded_and_new_each_epoch() -> None:
    import keras

    spec = augmentation_spec(
        data_cfg(enabled=True, flip="horizontal", rotation=0.1, zoom=0.1, brightness=0.1, seed=3)
    )
    arrays = images_and_labels()

    def two_epochs(seed: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        other = AugmentationSpec(**{**spec.__dict__, "seed": seed})
        dataset = make_dataset(arrays, 3, 4, shuffle=False, augment=make_augmenter(other))
        return epochs_of(dataset, 2)

    first, again, other_seed = two_epochs(3), two_epochs(3), two_epochs(4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1])  # a new draw each epoch
    assert not np.allclose(first[0], other_seed[0])
    plain = epochs_of(make_dataset(arrays, 3, 4, shuffle=False), 1)[0]
    assert not np.allclose(first[0], plain)
    assert first[0].min() >= -1.0 and first[0].max() <= 1.0  # still MobileNet's range


def test_flip_mirrors_or_keeps_each_image() -> None:
    import tensorflow as tf

    images = images_and_labels(count=16).images
    spec = AugmentationSpec(enabled=True, flip="horizontal")
    flipped = augment_images(tf.constant(images), tf.constant([1, 2], tf.int64), spec).numpy()
    mirrored = 0
    for original, result in zip(images.astype(np.float32), flipped, strict=True):
        if np.array_equal(result, original[:, ::-1]):
            mirrored += 1
        else:
            np.testing.assert_array_equal(result, original)
    assert 0 < mirrored < len(images)


def test_rotation_and_zoom_turn_about_the_centre() -> None:
    import tensorflow as tf

    size = 15
    image = np.zeros((1, size, size, 3), np.uint8)
    image[0, size // 2, size // 2] = 255  # one bright pixel at the centre
    image[0, 1, 1] = 255  # and one in a corner, which rotation moves
    spec = AugmentationSpec(enabled=True, rotation=0.5, zoom=0.2, fill_mode="constant")
    moved = 0
    for seed in range(8):
        result = augment_images(tf.constant(image), tf.constant([seed, 0], tf.int64), spec)
        result = result.numpy()[0]
        assert result[size // 2, size // 2].min() > 200, seed
        moved += result[1, 1].max() < 100
    assert moved > 0


def test_shift_and_contrast_stay_in_range() -> None:
    import tensorflow as tf

    images = images_and_labels(count=4).images
    spec = AugmentationSpec(enabled=True, translation=0.3, contrast=0.5, fill_mode="nearest")
    result = augment_images(tf.constant(images), tf.constant([5, 6], tf.int64), spec).numpy()
    assert result.shape == images.shape and result.dtype == np.float32
    assert result.min() >= 0.0 and result.max() <= 255.0
    assert not np.allclose(result, images)
