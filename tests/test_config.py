"""The config tree: every group option composes and passes validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mobitune.model import validate_model_config
from mobitune.paths import config_dir
from mobitune.settings import validate_run_config

GROUPS = sorted(
    folder.name
    for folder in config_dir().iterdir()
    if folder.is_dir() and folder.name not in ("hydra",)
)


def group_options() -> list[tuple[str, str]]:
    return [
        (group, option.stem)
        for group in GROUPS
        for option in sorted((config_dir() / group).glob("*.yaml"))
    ]


def test_every_group_has_options() -> None:
    assert {"data", "model", "optimizer", "trainer", "tracking", "objective", "paths"} <= set(
        GROUPS
    )
    assert {"experiment", "debug"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_config_option_composes(compose_config, group: str, option: str) -> None:
    cfg = compose_config(f"{group}={option}", debug=None)
    validate_run_config(cfg)
    validate_model_config(cfg.model, int(cfg.data.image_size))
    # Everything but Hydra's runtime folder resolves to concrete values.
    container = OmegaConf.to_container(cfg, resolve=False)
    container["paths"]["output_dir"] = "unused"
    resolved = OmegaConf.create(container)
    OmegaConf.resolve(resolved)
    assert Path(resolved.paths.mlruns_dir).is_absolute()


def test_defaults_match_the_documented_interface(compose_config) -> None:
    cfg = compose_config(debug=None)
    assert cfg.data.image_size == 224 and cfg.data.batch_size == 10
    assert cfg.model.alpha == 1.0 and cfg.model.cut_layer == "global_average_pooling2d"
    assert cfg.model.dropout == 0 and cfg.optimizer.name == "adam"
    assert cfg.optimizer.learning_rate == pytest.approx(1e-4)
    assert cfg.trainer.epochs == 30 and cfg.tracking.experiment == "mobitune"
    assert cfg.objective.metric == "val_accuracy" and cfg.objective.mode == "max"
    assert cfg.experiment is None if "experiment" in cfg else True


def test_seed_preset_is_the_tutorial(compose_config) -> None:
    cfg = compose_config("experiment=seed", debug=None)
    assert cfg.model.weights == "imagenet"
    assert cfg.model.trainable_layers == 23
    assert cfg.optimizer.learning_rate == pytest.approx(1e-4)
    assert (cfg.data.batch_size, cfg.trainer.epochs, cfg.data.image_size) == (10, 30, 224)


def test_default_store_is_sqlite_under_the_project_mlruns(compose_config, tmp_path: Path) -> None:
    cfg = compose_config(debug=None)
    container = OmegaConf.to_container(cfg, resolve=False)
    container["paths"]["output_dir"] = "unused"
    resolved = OmegaConf.create(container)
    OmegaConf.resolve(resolved)
    assert resolved.tracking.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
