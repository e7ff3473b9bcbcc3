"""Where one training step's time goes: data pipelines and MobileNet layer groups.

Times, per batch, on this machine: the seed-style input pipeline (decode + resize every
epoch), mobitune's pipelines (decoded once; cached features), the forward pass of each
group of frozen layers, the train step of the trainable tail alone and of the full model.
Run by benchmarks/run.py; on its own:

    python benchmarks/profile_layers.py --image-size 224 --data-root DATA --output p.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# Layer groups by feature-map size (at 224 px): the early, large maps are memory-bound.
GROUP_ENDS = (
    ("conv1 + block 1", "conv_pw_1_relu"),
    ("blocks 2-3", "conv_pw_3_relu"),
    ("blocks 4-5", "conv_pw_5_relu"),
    ("blocks 6-11", "conv_pw_11_relu"),
    ("blocks 12-13", "conv_pw_13_relu"),
)


def timed(function, repeats: int) -> float:
    """Fastest milliseconds of `function()` over `repeats` calls, after two warm-up calls.

    The fastest call is the one least disturbed by other work on a shared machine.
    """
    function()
    function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000.0)
    return min(samples)


def profile(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from mobitune.feature_cache import feature_dataset, split_at_frozen_boundary
    from mobitune.model import (
        build_model,
        configure_threads,
        counted_layers,
        validate_model_config,
    )

    configure_threads()
    size, batch = args.image_size, args.batch_size
    model_cfg = OmegaConf.create(
        {
            "weights": None,
            "alpha": args.alpha,
            "cut_layer": args.cut_layer,
            "trainable_layers": args.trainable_layers,
            "dropout": 0.0,
            "freeze_batchnorm": False,
        }
    )
    spec = validate_model_config(model_cfg, size, args.classes)
    keras.utils.set_random_seed(0)
    model = build_model(spec)
    split = split_at_frozen_boundary(model)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(batch, size, size, 3), dtype=np.uint8)
    images = keras.applications.mobilenet.preprocess_input(pixels.astype("float32"))
    labels = keras.utils.to_categorical(np.arange(batch) % args.classes, args.classes)
    results: dict = {"image_size": size, "batch_size": batch, "boundary": split.boundary}

    # Forward time of each group of layers, frozen or not, in inference mode.
    names = [layer.name for layer in counted_layers(model)]
    boundary_index = names.index(split.boundary)
    groups, start_tensor, start_index, inputs = [], model.input, -1, images
    for label, end in GROUP_ENDS:
        if end not in names:
            break
        segment = keras.Model(start_tensor, model.get_layer(end).output)
        forward = tf.function(lambda x, segment=segment: segment(x, training=False))
        milliseconds = timed(lambda f=forward, x=inputs: f(x).numpy(), args.repeats)
        end_index = names.index(end)
        if end_index <= boundary_index:
            state = "frozen"
        elif start_index < boundary_index:
            state = "partly frozen"
        else:
            state = "trainable"
        side = model.get_layer(end).output.shape[1]
        groups.append(
            {
                "group": f"{label} ({side} px maps)",
                "last_layer": end,
                "state": state,
                "ms": milliseconds,
            }
        )
        inputs = forward(inputs)
        start_tensor, start_index = model.get_layer(end).output, end_index
    results["forward_ms_by_group"] = groups

    frozen_forward = tf.function(lambda x: split.frozen(x, training=False))
    results["frozen_forward_ms"] = timed(lambda: frozen_forward(images).numpy(), args.repeats)
    features = frozen_forward(images).numpy()

    for name, trained, inputs in (("full", model, images), ("tail", split.tail, features)):
        trained.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=False,
        )
        # As fit runs it (one tf.function call per step); train_on_batch adds overhead.
        steps = tf.data.Dataset.from_tensors((inputs, labels)).repeat()
        trained.fit(steps, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # trace
        fastest = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            trained.fit(steps, steps_per_epoch=args.repeats, epochs=1, verbose=0, shuffle=False)
            fastest = min(fastest, time.perf_counter() - started)
        results[f"{name}_train_step_ms"] = fastest * 1000.0 / args.repeats

    # Input pipelines, per batch.
    many = np.repeat(features, 8, axis=0)
    feature_batches = feature_dataset(
        many, np.arange(len(many)) % args.classes, args.classes, batch, True, 0
    )
    iterator = iter(feature_batches.repeat())
    results["cached_feature_batch_ms"] = timed(lambda: next(iterator), args.repeats)
    if args.data_root:
        train_dir = Path(args.data_root) / "train"
        seed_style = keras.utils.image_dataset_from_directory(
            train_dir,
            label_mode="categorical",
            image_size=(size, size),
            batch_size=batch,
            shuffle=True,
            seed=0,
            interpolation="nearest",
            verbose=False,
        ).map(
            lambda x, y: (
                keras.applications.mobilenet.preprocess_input(keras.ops.cast(x, "float32")),
                y,
            )
        )
        seed_iterator = iter(seed_style.repeat())
        results["seed_pipeline_batch_ms"] = timed(lambda: next(seed_iterator), args.repeats)
        from mobitune.data import load_data

        data_cfg = OmegaConf.create(
            {"root": args.data_root, "image_size": size, "interpolation": "nearest"}
        )
        started = time.perf_counter()
        loaded = load_data(data_cfg)
        count = sum(len(split_arrays.labels) for split_arrays in loaded.arrays.values())
        results["decode_once_ms_per_image"] = (time.perf_counter() - started) * 1000.0 / count
    return results


def report(results: dict) -> str:
    """The profile as text lines."""
    lines = [
        f"Profile at {results['image_size']} px, batch {results['batch_size']} "
        f"(ms per batch, fastest of several; frozen boundary {results['boundary']}):"
    ]
    for group in results["forward_ms_by_group"]:
        lines.append(f"  forward {group['group']:<28} {group['ms']:8.1f}  ({group['state']})")
    lines.append(f"  forward, whole frozen part           {results['frozen_forward_ms']:8.1f}")
    lines.append(f"  train step, full model               {results['full_train_step_ms']:8.1f}")
    lines.append(f"  train step, tail on cached features  {results['tail_train_step_ms']:8.1f}")
    lines.append(
        f"  batch of cached features (pipeline)  {results['cached_feature_batch_ms']:8.1f}"
    )
    if "seed_pipeline_batch_ms" in results:
        lines.append(
            f"  batch, seed-style pipeline (decode)  {results['seed_pipeline_batch_ms']:8.1f}"
        )
        lines.append(
            f"  mobitune decode, once per run        "
            f"{results['decode_once_ms_per_image'] * results['batch_size']:8.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--cut-layer", default="global_average_pooling2d")
    parser.add_argument("--trainable-layers", type=int, default=23)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data-root", help="also time the input pipelines on this dataset")
    parser.add_argument("--output", help="write the profile here (JSON)")
    args = parser.parse_args(argv)
    results = profile(args)
    print(report(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
