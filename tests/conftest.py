"""Shared fixtures: the real config tree composed with Hydra's compose API, shrunk for tests.

Every test writes under its own tmp_path (MLflow store, Hydra outputs, caches); images
are generated, never downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "sign-language-digits"
# The console script pip installed beside this interpreter: what a user types.
MOBITUNE = str(Path(sys.executable).parent / "mobitune")

COLOURS = {
    "circle": (220, 40, 40),
    "square": (40, 180, 60),
    "stripes": (40, 70, 220),
}


def draw_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A small RGB image whose class is easy to learn (shape and colour), with noise."""
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.float64)
    colour = np.array(COLOURS[kind], dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    centre = size / 2 + rng.uniform(-size / 8, size / 8, size=2)
    if kind == "circle":
        mask = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (size / 3.2) ** 2
    elif kind == "square":
        half = size / 3.5
        mask = (abs(yy - centre[0]) < half) & (abs(xx - centre[1]) < half)
    else:
        mask = ((xx // max(2, size // 8)) % 2) == 0
    image[mask] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(
    root: Path,
    counts: dict[str, int] | None = None,
    size: int = 40,
    seed: int = 0,
    classes: tuple[str, ...] = tuple(COLOURS),
) -> Path:
    """Write ROOT/{train,valid,test}/<class>/*.png with `counts` images per class per split."""
    from PIL import Image

    counts = counts or {"train": 6, "valid": 3, "test": 2}
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for kind in classes:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.fromarray(draw_image(kind, size, rng)).save(folder / f"{kind}_{index}.png")
    return root


@pytest.fixture(scope="session")
def image_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-class dataset (6/3/2 images per class) shared by the session's tests."""
    return write_dataset(tmp_path_factory.mktemp("dataset"))


def compose_run_config(root: Path, dataset: Path, *overrides: str, debug: str | None = "tiny"):
    """Compose the real config tree shrunk by a debug preset, writing everything under root.

    For module-scoped fixtures; tests use the `compose_config` fixture.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mobitune.paths import config_dir, register_resolvers

    register_resolvers()
    base = [
        f"data.root={dataset}",
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'output'}",
    ]
    if debug:
        base.insert(0, f"debug={debug}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir())):
            return compose(config_name="config", overrides=[*base, *overrides])
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose_config(tmp_path: Path, image_dataset: Path) -> Callable:
    """Compose the real config tree with the tiny debug preset, writing under tmp_path."""

    def compose_with(*overrides: str, debug: str | None = "tiny"):
        return compose_run_config(tmp_path, image_dataset, *overrides, debug=debug)

    return compose_with


@pytest.fixture(autouse=True)
def _clear_keras_session() -> Iterator[None]:
    """Each test starts with a fresh Keras session and no active MLflow run."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    if "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        while mlflow.active_run() is not None:
            mlflow.end_run()


def tracking_uri_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def run_mobitune(
    *arguments: str, root: Path, timeout: float = 600, **environment: str
) -> subprocess.CompletedProcess:
    """Run `mobitune ARGUMENTS...` as a user would: a separate process in `root`.

    `root` is also the project root (`MOBITUNE_ROOT`), so the default MLflow store, Optuna
    storage, outputs and caches all land under it; `environment` adds variables.
    """
    return subprocess.run(
        [MOBITUNE, *arguments],
        capture_output=True,
        text=True,
        cwd=root,
        env=dict(os.environ, MOBITUNE_ROOT=str(root), TF_CPP_MIN_LOG_LEVEL="2", **environment),
        timeout=timeout,
    )
