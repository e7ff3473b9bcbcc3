"""Building the fine-tuning model: a Keras MobileNet cut at a named layer, plus a Dense head.

The seed tutorial cut MobileNet at `layers[-6]`, its global average pooling layer, and
froze `model.layers[:-23]`. Keras 3 changed MobileNet's layer list, so mobitune names the
cut layer instead of counting, and validates every choice before TensorFlow is touched.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobitune.errors import ConfigError, MobituneError, format_choices, nearest_names
from mobitune.settings import finite_number

if TYPE_CHECKING:  # pragma: no cover
    import keras

log = logging.getLogger(__name__)

IMAGENET_ALPHAS = (0.25, 0.5, 0.75, 1.0)
IMAGENET_SIZES = (128, 160, 192, 224)
MIN_IMAGE_SIZE = 32
# Blocks whose depthwise convolution has stride 2 (Keras pads before them).
_STRIDED_BLOCKS = (2, 4, 6, 12)
_BLOCKS = 13
# The pooling layer Keras' MobileNet puts on top of its last block (`include_top=True`).
POOLING_LAYER = "global_average_pooling2d"
# The ImageNet classifier layers after the pooling: not offered as cut points, since
# they are the 1000-class ImageNet head that the new head replaces.
IMAGENET_CLASSIFIER_LAYERS = ("dropout", "conv_preds", "reshape_2", "predictions")
# Parameter-free layers mobitune inserts between the cut and the head. They do not count
# as layers for `model.trainable_layers`, so N keeps the seed's meaning.
FLATTEN_LAYER = "head_flatten"
DROPOUT_LAYER = "head_dropout"
HEAD_LAYER = "head"
ADAPTER_LAYERS = (FLATTEN_LAYER, DROPOUT_LAYER)
DOWNLOAD_TIMEOUT_SECONDS = 60


def cut_layer_names() -> list[str]:
    """Names of the base MobileNet's layers a head can attach to, input to output.

    The same names as `keras.applications.MobileNet(include_top=True).layers[1:]` up to
    and including its global average pooling layer (a test keeps this list honest).
    """
    names = ["conv1", "conv1_bn", "conv1_relu"]
    for block in range(1, _BLOCKS + 1):
        if block in _STRIDED_BLOCKS:
            names.append(f"conv_pad_{block}")
        for kind in ("dw", "pw"):
            names += [
                f"conv_{kind}_{block}",
                f"conv_{kind}_{block}_bn",
                f"conv_{kind}_{block}_relu",
            ]
    names.append(POOLING_LAYER)
    return names


def counted_layer_count(cut_layer: str) -> int:
    """How many layers `model.trainable_layers` counts in the model cut at `cut_layer`.

    The base layers up to the cut plus the Dense head (the input layer and the
    parameter-free adapters are not counted).
    """
    return cut_layer_names().index(cut_layer) + 2


@dataclass
class ModelSpec:
    """The validated model options a run builds from."""

    weights: str | None
    alpha: float
    image_size: int
    cut_layer: str
    trainable_layers: int  # resolved: `all` becomes the counted layer count
    dropout: float
    freeze_batchnorm: bool
    num_classes: int


def _normalise_weights(weights: Any) -> str | None:
    if weights is None or str(weights).lower() in ("null", "none", ""):
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise ConfigError(
            "model.weights",
            str(weights),
            "`imagenet`, `null`, or the path of an existing weights file",
            f"No file exists at {str(path)!r}.",
        )
    return str(path.resolve())


def validate_model_config(
    model_cfg: Any, image_size: int, num_classes: int | None = None
) -> ModelSpec:
    """Check the `model` config group (and image size) and resolve it into a ModelSpec.

    `num_classes` may be left out to check the options before the dataset is read.

    Raises ConfigError naming the key, the bad value and what is valid.
    """
    names = cut_layer_names()
    cut_layer = str(model_cfg.cut_layer)
    if cut_layer not in names:
        if cut_layer in IMAGENET_CLASSIFIER_LAYERS:
            why = (
                "it belongs to MobileNet's 1000-class ImageNet classifier, which the head replaces."
            )
        else:
            nearest = ", ".join(f"`{name}`" for name in nearest_names(cut_layer, names))
            why = f"Nearest valid names: {nearest}."
        raise ConfigError(
            "model.cut_layer",
            cut_layer,
            "a layer name of the base MobileNet",
            f"{why} Valid layer names, input to output: {format_choices(names, limit=200)}.",
        )
    counted = counted_layer_count(cut_layer)
    raw_trainable = model_cfg.trainable_layers
    if str(raw_trainable).lower() == "all":
        trainable_layers = counted
    else:
        try:
            trainable_layers = int(raw_trainable)
            if trainable_layers != float(raw_trainable):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                "model.trainable_layers", raw_trainable, f"an integer from 1 to {counted}, or `all`"
            ) from None
        if not 1 <= trainable_layers <= counted:
            raise ConfigError(
                "model.trainable_layers",
                raw_trainable,
                f"an integer from 1 to {counted}, or `all`",
                f"The model cut at `{cut_layer}` has {counted} layers (base layers up to the "
                "cut plus the Dense head); 1 trains only the head.",
            )
    alpha = finite_number("model.alpha", model_cfg.alpha, "a positive width multiplier, e.g. 1.0")
    if alpha <= 0:
        raise ConfigError("model.alpha", model_cfg.alpha, "a positive width multiplier, e.g. 1.0")
    dropout = finite_number(
        "model.dropout", model_cfg.get("dropout", 0.0) or 0.0, "a rate in [0, 1)"
    )
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("model.dropout", model_cfg.dropout, "a rate in [0, 1)")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ConfigError(
            "data.image_size", image_size, f"an integer of at least {MIN_IMAGE_SIZE} (pixels)"
        )
    weights = _normalise_weights(model_cfg.weights)
    if weights == "imagenet" and alpha not in IMAGENET_ALPHAS:
        raise ConfigError(
            "model.alpha",
            model_cfg.alpha,
            f"one of {list(IMAGENET_ALPHAS)} with `model.weights=imagenet`",
            "ImageNet weights exist only for those widths; use `model.weights=null` for others.",
        )
    if num_classes is not None and num_classes < 2:
        raise ConfigError("data (classes)", num_classes, "at least 2 classes")
    return ModelSpec(
        weights=weights,
        alpha=alpha,
        image_size=int(image_size),
        cut_layer=cut_layer,
        trainable_layers=trainable_layers,
        dropout=dropout,
        freeze_batchnorm=bool(model_cfg.get("freeze_batchnorm", False)),
        num_classes=int(num_classes or 0),
    )


def _imagenet_error(spec: ModelSpec, error: Exception) -> MobituneError:
    return MobituneError(
        "Downloading the ImageNet weights of MobileNet "
        f"(alpha={spec.alpha}, no top) failed: {error}. This machine may have no network "
        "access. To run offline, use `model.weights=null` (random initial weights) or "
        "`model.weights=/path/to/mobilenet_1_0_224_tf_no_top.h5` (a weights file you copied "
        "here; Keras caches downloads in ~/.keras/models)."
    )


def build_base(spec: ModelSpec) -> keras.Model:
    """Keras MobileNet without its classifier, topped with its global average pooling layer.

    Layer names are the ones `keras.applications.MobileNet` uses, so `cut_layer` can name
    any of them.
    """
    import keras

    input_shape = (spec.image_size, spec.image_size, 3)
    weights = spec.weights
    previous_timeout = socket.getdefaulttimeout()
    try:
        # A download over a dead network must fail, not hang.
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
        mobilenet = keras.applications.MobileNet(
            input_shape=input_shape, alpha=spec.alpha, include_top=False, weights=weights
        )
    except Exception as error:
        if weights == "imagenet":
            raise _imagenet_error(spec, error) from error
        if weights is not None:
            raise MobituneError(
                f"Could not load `model.weights={weights}` into MobileNet (alpha={spec.alpha}, "
                f"without its top): {error}. The file must hold weights of a Keras MobileNet "
                "with the same alpha saved without the classifier (a `_no_top` file)."
            ) from error
        raise
    finally:
        socket.setdefaulttimeout(previous_timeout)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=POOLING_LAYER)(
        mobilenet.output
    )
    return keras.Model(mobilenet.input, pooled, name=mobilenet.name)


def counted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers `trainable_layers` counts: all but the input layer and the adapters."""
    import keras

    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and layer.name not in ADAPTER_LAYERS
    ]


def freeze_layers(model: keras.Model, trainable_layers: int, freeze_batchnorm: bool) -> None:
    """Freeze all but the last `trainable_layers` counted layers (the seed's `layers[:-N]`).

    A frozen BatchNormalization layer runs in inference mode in Keras 3, so its moving
    statistics stay as loaded. With `freeze_batchnorm`, BatchNormalization layers among
    the trainable ones are frozen too, the keras-io advice for small datasets.
    """
    import keras

    layers = counted_layers(model)
    boundary = len(layers) - trainable_layers
    for index, layer in enumerate(layers):
        layer.trainable = index >= boundary
        if freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def build_model(spec: ModelSpec) -> keras.Model:
    """The fine-tuning model: base MobileNet up to `cut_layer`, flattened, Dense softmax head."""
    import keras

    base = build_base(spec)
    features = base.get_layer(spec.cut_layer).output
    if len(features.shape) > 2:
        features = keras.layers.Flatten(name=FLATTEN_LAYER)(features)
    if spec.dropout > 0:
        features = keras.layers.Dropout(spec.dropout, name=DROPOUT_LAYER)(features)
    outputs = keras.layers.Dense(spec.num_classes, activation="softmax", name=HEAD_LAYER)(features)
    model = keras.Model(base.input, outputs, name=f"mobitune_{base.name}")
    freeze_layers(model, spec.trainable_layers, spec.freeze_batchnorm)
    return model


def frozen_boundary(model: keras.Model) -> str | None:
    """Name of the last layer before the first trainable one (None if nothing is frozen)."""
    previous = None
    for layer in counted_layers(model):
        if layer.trainable and layer.weights:
            return previous
        previous = layer.name
    return previous


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts, as `model.summary()` shows them."""
    import numpy as np

    trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def serving_model(model: keras.Model) -> keras.Model:
    """The trained model behind MobileNet's preprocessing: it takes RGB pixels in [0, 255].

    `Rescaling(1/127.5, offset=-1)` is exactly `mobilenet.preprocess_input`, so the logged
    model needs no separate preprocessing step when it serves predictions. The trained
    layers are wrapped in a fresh, uncompiled model so that the optimizer's state (twice
    the size of the weights with Adam) is not saved with the served model.
    """
    import keras

    inference = keras.Model(model.inputs, model.outputs, name=model.name)
    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    return keras.Model(inputs, inference(scaled), name="mobitune_serving")


_threads_configured = False


def configure_threads(parallel_jobs: int = 1) -> None:
    """Share the cores between the jobs running at once, once per process (before any op).

    Each of `parallel_jobs` concurrent trials gets cores // parallel_jobs threads for
    its ops, so parallel sweep trials do not oversubscribe the CPU.
    """
    import tensorflow as tf

    global _threads_configured
    if _threads_configured:
        return
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, parallel_jobs))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:  # TensorFlow already initialised in this process: keep its settings
        pass
    _threads_configured = True
