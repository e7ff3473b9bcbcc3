"""Where mobitune finds its configs and where a project's outputs go.

Every output location in a run comes from the `paths` config group; this module only
answers the two questions that config cannot: where the config tree itself lives, and
which folder is the project root that `paths.root_dir` defaults to.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout (editable install) keeps conf/ and sweeps/ at the repository root;
# a wheel carries copies under mobitune/_configs/.
_SOURCE_ROOT = PACKAGE_DIR.parents[1]
_PACKAGED_CONFIGS = PACKAGE_DIR / "_configs"

ROOT_ENV_VAR = "MOBITUNE_ROOT"
ROOT_MARKERS = (".project-root", "pyproject.toml", ".git")


def _config_tree(name: str) -> Path:
    source = _SOURCE_ROOT / name
    if source.is_dir():
        return source
    return _PACKAGED_CONFIGS / name


def config_dir() -> Path:
    """The folder holding the Hydra config tree (`conf/`)."""
    return _config_tree("conf")


def sweeps_dir() -> Path:
    """The folder holding the sweep definitions (`sweeps/`)."""
    return _config_tree("sweeps")


def project_root(start: Path | None = None) -> Path:
    """The project root that default outputs (mlruns/, outputs/, data/) live under.

    `MOBITUNE_ROOT` wins; otherwise the nearest folder at or above `start` (default:
    the current directory) holding a `.project-root`, `pyproject.toml` or `.git`;
    otherwise the current directory itself.
    """
    from_env = os.environ.get(ROOT_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser().resolve()
    current = (start or Path.cwd()).resolve()
    for folder in (current, *current.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return current


def optuna_storage_url(tracking_uri: str, mlruns_dir: str) -> str:
    """The default Optuna storage: `optuna.db` beside a SQLite MLflow store, else in mlruns/."""
    from mobitune.tracking import sqlite_path

    database = sqlite_path(tracking_uri)
    folder = database.parent if database is not None else Path(mlruns_dir)
    return f"sqlite:///{folder / 'optuna.db'}"


def register_resolvers() -> None:
    """Register the OmegaConf resolvers the config tree uses (idempotent)."""
    from omegaconf import OmegaConf

    def root_resolver() -> str:
        return str(project_root())

    def sweeps_root_resolver() -> str:
        return str(sweeps_dir().parent)

    for name, resolver in (
        ("mobitune.project_root", root_resolver),
        ("mobitune.sweeps_root", sweeps_root_resolver),
        ("mobitune.optuna_storage", optuna_storage_url),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, resolver)
