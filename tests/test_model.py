"""The fine-tuning model: cut points, frozen layers and the seed's parameter counts."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from omegaconf import OmegaConf

from mobitune.errors import ConfigError, MobituneError
from mobitune.model import (
    build_base,
    build_model,
    counted_layers,
    cut_layer_names,
    parameter_counts,
    serving_model,
    validate_model_config,
)


def model_cfg(**overrides):
    values = {
        "weights": None,
        "alpha": 1.0,
        "cut_layer": "global_average_pooling2d",
        "trainable_layers": 23,
        "dropout": 0.0,
        "freeze_batchnorm": False,
    }
    values.update(overrides)
    return OmegaConf.create(values)


def test_seed_preset_reproduces_the_tutorial_parameter_counts(compose_config) -> None:
    cfg = compose_config("experiment=seed", "model.weights=null", debug=None)
    spec = validate_model_config(cfg.model, cfg.data.image_size, num_classes=10)
    model = build_model(spec)
    assert parameter_counts(model) == {
        "total": 3_239_114,
        "trainable": 1_873_930,
        "non_trainable": 1_365_184,
    }
    # The seed froze model.layers[:-23]: conv_pw_10_bn is the first trainable layer.
    trainable = [layer.name for layer in counted_layers(model) if layer.trainable]
    assert trainable[0] == "conv_pw_10_bn" and trainable[-1] == "head"
    assert len(trainable) == 23


def test_cut_layer_names_are_keras_mobilenet_layer_names() -> None:
    full = keras.applications.MobileNet(weights=None, input_shape=(64, 64, 3), alpha=0.25)
    names = [layer.name for layer in full.layers[1:]]
    pooling = next(name for name in names if name.startswith("global_average_pooling2d"))
    keras_names = names[: names.index(pooling)] + ["global_average_pooling2d"]
    assert cut_layer_names() == keras_names


def test_unknown_cut_layer_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as raised:
        validate_model_config(model_cfg(cut_layer="conv_pw_13_rleu"), 64, 3)
    message = str(raised.value)
    assert "model.cut_layer" in message and "conv_pw_13_rleu" in message
    assert "`conv_pw_13_relu`" in message.split("Valid layer names")[0]  # nearest first
    assert "global_average_pooling2d" in message and "conv1_bn" in message


def test_imagenet_classifier_layers_are_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match="ImageNet classifier"):
        validate_model_config(model_cfg(cut_layer="predictions"), 64, 3)


@pytest.mark.parametrize("value", [0, -1, 88, "many", 2.5])
def test_trainable_layers_out_of_range(value) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_model_config(model_cfg(trainable_layers=value), 64, 3)
    assert "model.trainable_layers" in str(raised.value)
    assert "from 1 to 87" in str(raised.value)


def test_trainable_layers_all_and_head_only() -> None:
    spec = validate_model_config(model_cfg(trainable_layers="all", alpha=0.25), 32, 3)
    model = build_model(spec)
    assert parameter_counts(model)["trainable"] > 0
    assert all(layer.trainable for layer in counted_layers(model))
    keras.backend.clear_session()
    spec = validate_model_config(model_cfg(trainable_layers=1, alpha=0.25), 32, 3)
    model = build_model(spec)
    assert [layer.name for layer in counted_layers(model) if layer.trainable] == ["head"]
    assert parameter_counts(model)["trainable"] == 256 * 3 + 3


def test_cut_before_pooling_is_flattened_and_dropout_not_counted() -> None:
    spec = validate_model_config(
        model_cfg(cut_layer="conv_pw_12_relu", trainable_layers=4, dropout=0.2, alpha=0.25),
        32,
        3,
    )
    model = build_model(spec)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["head_flatten", "head_dropout", "head"]
    trainable = [layer.name for layer in counted_layers(model) if layer.trainable]
    assert trainable == ["conv_pw_12", "conv_pw_12_bn", "conv_pw_12_relu", "head"]
    assert model.output_shape == (None, 3)


def test_freeze_batchnorm_keeps_batchnorm_layers_frozen() -> None:
    spec = validate_model_config(model_cfg(alpha=0.25, freeze_batchnorm=True), 32, 3)
    model = build_model(spec)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    spec = validate_model_config(model_cfg(alpha=0.25), 32, 3)
    base = build_base(spec)
    weights_file = tmp_path / "mobilenet_no_top.weights.h5"
    mobilenet_only = keras.Model(base.input, base.get_layer("conv_pw_13_relu").output)
    mobilenet_only.save_weights(weights_file)
    keras.backend.clear_session()
    spec = validate_model_config(model_cfg(alpha=0.25, weights=str(weights_file)), 32, 3)
    loaded = build_model(spec)
    for layer in mobilenet_only.layers:
        for saved, restored in zip(
            layer.get_weights(), loaded.get_layer(layer.name).get_weights(), strict=True
        ):
            assert (saved == restored).all(), layer.name


def test_weights_file_for_another_width_is_a_clear_error(tmp_path: Path) -> None:
    spec = validate_model_config(model_cfg(alpha=0.5), 32, 3)
    base = build_base(spec)
    weights_file = tmp_path / "alpha_0_5.weights.h5"
    keras.Model(base.input, base.get_layer("conv_pw_13_relu").output).save_weights(weights_file)
    keras.backend.clear_session()
    spec = validate_model_config(model_cfg(alpha=0.25, weights=str(weights_file)), 32, 3)
    with pytest.raises(MobituneError, match="_no_top"):
        build_model(spec)


def test_missing_weights_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.weights"):
        validate_model_config(model_cfg(weights=str(tmp_path / "nope.h5")), 32, 3)


def test_imagenet_download_failure_names_the_offline_override(tmp_path, monkeypatch) -> None:
    """Real download attempt: on a machine without network it must fail clearly."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    spec = validate_model_config(model_cfg(weights="imagenet", alpha=0.25), 128, 3)
    try:
        build_model(spec)
    except MobituneError as error:
        assert "failed" in str(error) and "model.weights=null" in str(error)
    else:  # pragma: no cover - only where the network is reachable
        pytest.skip("network reachable: ImageNet weights downloaded")


def test_serving_model_applies_mobilenet_preprocessing() -> None:
    import numpy as np

    spec = validate_model_config(model_cfg(alpha=0.25), 32, 3)
    model = build_model(spec)
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    expected = model(keras.applications.mobilenet.preprocess_input(pixels.copy()))
    np.testing.assert_allclose(serving_model(model)(pixels), expected, rtol=1e-5, atol=1e-6)
