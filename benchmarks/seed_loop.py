"""The seed tutorial's training loop, ported to Keras 3 as a user would write it: the baseline.

The tutorial used ImageDataGenerator.flow_from_directory (gone from Keras 3); its Keras 3
equivalent is `keras.utils.image_dataset_from_directory`, which decodes and resizes every
image again in every epoch, as the original did. Same model as the tutorial: MobileNet cut
at its global average pooling layer, Dense(classes, softmax), all but the last 23 layers
frozen, Adam(1e-4), batch size 10. `weights=None` because ImageNet weights cannot be
downloaded offline: the compute is the same.

    python benchmarks/seed_loop.py --data-root DATA --epochs 3 --output seed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder with train/, valid/, test/")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", help="write timings and metrics here (JSON)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import keras
    import numpy as np

    keras.utils.set_random_seed(args.seed)
    root = Path(args.data_root)
    size = (args.image_size, args.image_size)
    preprocess_input = keras.applications.mobilenet.preprocess_input

    def batches(split: str, shuffle: bool):
        dataset = keras.utils.image_dataset_from_directory(
            root / split,
            label_mode="categorical",
            image_size=size,
            batch_size=10,
            shuffle=shuffle,
            seed=args.seed,
            # flow_from_directory's default, which the tutorial used.
            interpolation="nearest",
        )
        class_names = dataset.class_names
        # With nearest-neighbour resizing the batches stay uint8: cast before preprocessing.
        return dataset.map(lambda x, y: (preprocess_input(keras.ops.cast(x, "float32")), y)), (
            class_names
        )

    train_batches, class_names = batches("train", shuffle=True)
    valid_batches, _ = batches("valid", shuffle=False)
    test_batches, _ = batches("test", shuffle=False)

    mobile = keras.applications.MobileNet(weights=None, input_shape=(*size, 3), alpha=args.alpha)
    # The tutorial's `mobile.layers[-6]` (Keras 2) is `layers[-5]` in Keras 3: its pooling.
    pooling = mobile.layers[-5]
    assert isinstance(pooling, keras.layers.GlobalAveragePooling2D), pooling
    # Keras 3 keeps the pooled map 4-D (1x1xC), so a Flatten comes before the Dense layer.
    x = keras.layers.Flatten()(pooling.output)
    output = keras.layers.Dense(units=len(class_names), activation="softmax")(x)
    model = keras.Model(inputs=mobile.input, outputs=output)
    # The tutorial froze layers[:-23]; the Flatten Keras 3 needs is one layer more.
    for layer in model.layers[:-24]:
        layer.trainable = False
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-4),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(time.perf_counter() - self._started)

    timer = EpochTimer()
    fit_started = time.perf_counter()
    history = model.fit(
        x=train_batches,
        validation_data=valid_batches,
        epochs=args.epochs,
        verbose=2,
        callbacks=[timer],
    )
    fit_seconds = time.perf_counter() - fit_started
    test_labels = np.concatenate([np.argmax(y, axis=1) for _, y in test_batches])
    predictions = model.predict(x=test_batches, verbose=0)
    test_accuracy = float(np.mean(predictions.argmax(axis=1) == test_labels))

    trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
    result = {
        "epoch_seconds": timer.seconds,
        "fit_seconds": fit_seconds,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "test_accuracy": test_accuracy,
        "total_params": int(model.count_params()),
        "trainable_params": trainable,
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps({key: value for key, value in result.items() if key != "history"}))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
