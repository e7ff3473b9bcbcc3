"""Reproducing a run from the config it logged, and comparing the two runs' metrics.

The run's `config.yaml` artifact (the fully resolved config it trained with) becomes the
primary config of a Hydra compose, so overrides use Hydra's full grammar: `key=value`,
`+new.key=value`, `~key`, and `+group=option` merges an option of the project's config
groups (e.g. `+optimizer=sgd`). The reproduction is a plain run: a sweep child's
`study.trial_number` and `tracking.parent_run_id` are reset to null. It is tagged
`mobitune.reproduced_from=RUN_ID`.

Where the new run goes: the store the original was read from (`--tracking-uri`, else
`MLFLOW_TRACKING_URI`, else the project's default store), so the two runs sit side by
side even when the logged `tracking.uri` names a store on another machine; a
`tracking.uri=...` override sends it elsewhere. Likewise `paths.*` (outputs, caches) are
today's project's; `data.root` stays the logged dataset (override it when the data moved).
Config keys added to mobitune since the run was logged take today's defaults (listed).

With the same config, data and environment, CPU training is deterministic (seeded Keras,
TensorFlow op determinism, seeded data order), so by default every final metric must
match exactly. Timing metrics (seconds, latency) are shown but never compared.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobitune.errors import MobituneError
from mobitune.registry import RunStore, compose_config, open_store
from mobitune.settings import EPOCH_METRICS
from mobitune.study import TAG_PRUNED_AT_EPOCH

if TYPE_CHECKING:  # pragma: no cover
    import mlflow
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

TAG_REPRODUCED_FROM = "mobitune.reproduced_from"
TAG_REPRODUCE_OVERRIDES = "mobitune.reproduce_overrides"
PRIMARY_CONFIG = "logged_config"
# Metrics that `mobitune export` adds to a run after it finished: not part of training.
EXPORT_PREFIX = "tflite."
# The unqualified export metrics hold the latest export of any type: compared per type
# (`tflite.float16.size_bytes`, ...) instead.
LATEST_EXPORT_METRICS = ("tflite.size_bytes", "tflite.test_accuracy", "tflite.latency_ms")
# Bookkeeping metrics about how a run computed, not what it learned (e.g. whether the
# frozen-feature cache was hit): listed, not compared.
BOOKKEEPING_PREFIXES = ("cache.",)
# Tags naming the code a run came from: a difference explains differing metrics.
CODE_TAGS = ("mobitune.version", "mobitune.git_commit")


def is_timing_metric(name: str) -> bool:
    """True for wall-clock measurements, which differ between any two runs."""
    return name.endswith(("_seconds", "latency_ms", "_ms"))


@dataclass
class MetricComparison:
    """One metric of the original run next to the reproduction's."""

    name: str
    original: float | None
    reproduced: float | None
    compared: bool
    matches: bool
    note: str = ""

    @property
    def difference(self) -> float | None:
        if self.original is None or self.reproduced is None:
            return None
        return self.reproduced - self.original


@dataclass
class Reproduction:
    """The outcome of reproducing a run: the new run and how its metrics compare."""

    original_run_id: str
    run_id: str
    tracking_uri: str
    tolerance: float
    comparisons: list[MetricComparison]
    original_fingerprint: str | None
    fingerprint: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def data_matches(self) -> bool | None:
        """True/False when both fingerprints are known, else None."""
        if not self.original_fingerprint or not self.fingerprint:
            return None
        return self.original_fingerprint == self.fingerprint

    @property
    def mismatches(self) -> list[MetricComparison]:
        return [item for item in self.comparisons if item.compared and not item.matches]

    @property
    def compared_count(self) -> int:
        return sum(item.compared for item in self.comparisons)

    @property
    def matched(self) -> bool:
        """Every compared metric within the tolerance (and at least one compared)."""
        return self.compared_count > 0 and not self.mismatches


def _targets_key(override: str, key: str) -> bool:
    name = override.split("=", 1)[0].lstrip("+~")
    return name == key


def with_current_defaults(logged: DictConfig) -> tuple[DictConfig, list[str]]:
    """The logged config over today's config tree: keys it lacks get today's defaults.

    A run logged before a config option existed still runs with today's code. `paths`
    (where outputs and caches go) is today's project's, not the original machine's. Returns
    the config (unresolved where a default is an interpolation, e.g. of `paths`) and the
    dotted keys that were filled in.
    """
    from omegaconf import OmegaConf

    from mobitune.paths import config_dir
    from mobitune.tracking import flatten_config

    defaults = compose_config("config", [config_dir()])
    OmegaConf.set_struct(defaults, False)
    merged = OmegaConf.merge(defaults, logged)
    if "paths" in defaults:
        # Where outputs and caches go is this machine's business, not the original's.
        merged.paths = defaults.paths
    logged_keys = set(flatten_config(OmegaConf.to_container(logged, resolve=False)))
    merged_keys = set(flatten_config(OmegaConf.to_container(merged, resolve=False)))
    return merged, sorted(merged_keys - logged_keys)


def reproduction_config(
    store: RunStore,
    run: mlflow.entities.Run,
    overrides: Sequence[str] = (),
    filled_keys: list[str] | None = None,
) -> DictConfig:
    """The run's logged config with `overrides` applied, made a plain run tagged with its origin.

    Keys the run did not log (options added since) get today's defaults; their names are
    appended to `filled_keys` when given.
    """
    from omegaconf import OmegaConf, open_dict

    from mobitune.paths import config_dir

    logged, filled = with_current_defaults(store.load_config(run))
    if filled_keys is not None:
        filled_keys.extend(filled)
    with tempfile.TemporaryDirectory(prefix="mobitune-reproduce-") as folder:
        primary = OmegaConf.merge(OmegaConf.create({"defaults": ["_self_"]}), logged)
        OmegaConf.save(primary, Path(folder) / f"{PRIMARY_CONFIG}.yaml")
        # The project's config tree is searched too, so `+group=option` works.
        cfg = compose_config(PRIMARY_CONFIG, [Path(folder), config_dir()], overrides)
    run_id = run.info.run_id
    with open_dict(cfg):
        if OmegaConf.select(cfg, "study") is not None:
            OmegaConf.update(cfg, "study.trial_number", None, force_add=True)
            OmegaConf.update(cfg, "study.sweeper_pid", None, force_add=True)
        OmegaConf.update(cfg, "tracking.parent_run_id", None, force_add=True)
        if not any(_targets_key(override, "tracking.uri") for override in overrides):
            cfg.tracking.uri = store.uri
        if cfg.tracking.get("tags") is None:
            cfg.tracking.tags = {}
        cfg.tracking.tags[TAG_REPRODUCED_FROM] = run_id
        if overrides:
            cfg.tracking.tags[TAG_REPRODUCE_OVERRIDES] = " ".join(overrides)[:5000]
        else:
            cfg.tracking.tags.pop(TAG_REPRODUCE_OVERRIDES, None)
    return cfg


def dataset_fingerprint(cfg: DictConfig) -> str:
    """The fingerprint of the dataset `cfg.data.root` names now (a DataError if unusable)."""
    from mobitune.data import discover_dataset

    return discover_dataset(cfg.data.root).fingerprint()


def _history(client: mlflow.MlflowClient, run_id: str, name: str) -> list[float]:
    points = sorted(client.get_metric_history(run_id, name), key=lambda p: (p.step, p.timestamp))
    by_step: dict[int, float] = {}
    for point in points:
        by_step[point.step] = float(point.value)  # the latest value of each step
    return [by_step[step] for step in sorted(by_step)]


def _close(left: float, right: float, tolerance: float) -> bool:
    """Within tolerance; the same non-finite value (a diverged loss: nan, inf) matches."""
    if left == right or (math.isnan(left) and math.isnan(right)):
        return True
    return abs(right - left) <= tolerance


def _history_note(original: list[float], reproduced: list[float], tolerance: float) -> str | None:
    """None when two per-epoch histories match, else what differs."""
    if len(original) != len(reproduced):
        return f"{len(original)} epochs logged, {len(reproduced)} reproduced"
    for epoch, (left, right) in enumerate(zip(original, reproduced, strict=True)):
        if not _close(left, right, tolerance):
            return f"history differs from epoch {epoch}"
    return None


def _metric_order(name: str) -> tuple[int, str]:
    if name in EPOCH_METRICS:
        return (0, f"{EPOCH_METRICS.index(name):02d}")
    if name.startswith("test_"):
        return (1, name)
    if is_timing_metric(name):
        return (4, name)
    if name.startswith(EXPORT_PREFIX):
        return (3, name)
    return (2, name)


def compare_runs(
    original: mlflow.entities.Run,
    reproduced: mlflow.entities.Run,
    original_client: mlflow.MlflowClient,
    reproduced_client: mlflow.MlflowClient | None = None,
    tolerance: float = 0.0,
) -> list[MetricComparison]:
    """Compare every final metric (and the per-epoch histories) of two runs.

    Each client reads its run's histories (the runs may be in different stores).
    Timing metrics are listed, not compared. A metric missing from the reproduction is a
    mismatch, except export metrics (`tflite.*`), which `mobitune export` adds later.
    """
    reproduced_client = reproduced_client or original_client
    left = original.data.metrics
    right = reproduced.data.metrics
    comparisons = []
    for name in sorted(set(left) | set(right), key=_metric_order):
        first, second = left.get(name), right.get(name)
        if is_timing_metric(name):
            comparisons.append(MetricComparison(name, first, second, False, True, "timing"))
        elif name.startswith(BOOKKEEPING_PREFIXES):
            comparisons.append(MetricComparison(name, first, second, False, True, "bookkeeping"))
        elif name in LATEST_EXPORT_METRICS:
            note = "latest export of any type; compared per type"
            comparisons.append(MetricComparison(name, first, second, False, True, note))
        elif first is None:
            comparisons.append(
                MetricComparison(name, None, second, False, True, "only in the reproduction")
            )
        elif second is None:
            if name.startswith(EXPORT_PREFIX):
                note = "exported after the original run"
                comparisons.append(MetricComparison(name, first, None, False, True, note))
            else:
                note = "missing from the reproduction"
                comparisons.append(MetricComparison(name, first, None, True, False, note))
        else:
            matches = _close(first, second, tolerance)
            note = ""
            if name in EPOCH_METRICS:
                history_note = _history_note(
                    _history(original_client, original.info.run_id, name),
                    _history(reproduced_client, reproduced.info.run_id, name),
                    tolerance,
                )
                if history_note:
                    matches, note = False, history_note
                else:
                    note = "same history"
            comparisons.append(MetricComparison(name, first, second, True, matches, note))
    return comparisons


def _code_notes(original: mlflow.entities.Run, reproduced: mlflow.entities.Run) -> list[str]:
    notes = []
    for tag in CODE_TAGS:
        before, after = original.data.tags.get(tag), reproduced.data.tags.get(tag)
        if before and after and before != after:
            notes.append(f"Code differs: {tag} was {before}, is {after}.")
    return notes


def _new_run(uri: str, original_run_id: str) -> mlflow.entities.Run:
    """The run `train` just logged (this process's last run, checked by its tag)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    last = mlflow.last_active_run()
    if last is not None and last.data.tags.get(TAG_REPRODUCED_FROM) == original_run_id:
        return client.get_run(last.info.run_id)
    found = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{TAG_REPRODUCED_FROM}` = '{original_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise MobituneError(f"The reproduction of run {original_run_id} logged no run in {uri}.")
    return found[0]


def reproduce_run(
    run_id: str,
    overrides: Sequence[str] = (),
    tracking_uri: str | None = None,
    tolerance: float = 0.0,
    announce: Callable[[str], Any] | None = None,
) -> Reproduction:
    """Train run `run_id` again from its logged config and compare the new run with it.

    `announce` receives progress lines (before training starts). Raises MobituneError for
    an unknown run, a run without a logged config, bad overrides or unusable data.
    """
    import mlflow

    from mobitune.tracking import TAG_DATA_FINGERPRINT
    from mobitune.train import train

    if not tolerance >= 0:
        raise MobituneError(f"--tolerance must be a number >= 0, not {tolerance}.")
    store = open_store(tracking_uri)
    original = store.get_run(run_id)
    filled: list[str] = []
    cfg = reproduction_config(store, original, overrides, filled)
    original_fingerprint = original.data.tags.get(TAG_DATA_FINGERPRINT)
    notes: list[str] = []
    pruned_at = original.data.tags.get(TAG_PRUNED_AT_EPOCH)
    if pruned_at is not None and not any(_targets_key(o, "trainer.epochs") for o in overrides):
        # A sweep's pruner stopped the original after this epoch (0-based): train as long.
        cfg.trainer.epochs = int(pruned_at) + 1
        notes.append(
            f"The original was a sweep trial pruned after epoch {int(pruned_at) + 1} of "
            f"{original.data.params.get('trainer.epochs', '?')}: the reproduction trains "
            f"{int(pruned_at) + 1} epoch(s) too (override trainer.epochs to change that)."
        )
    if filled:
        shown = ", ".join(filled[:12]) + (
            f" and {len(filled) - 12} more" if len(filled) > 12 else ""
        )
        notes.append(
            f"The original run logged no value for {len(filled)} config key(s) that exist now; "
            f"they take today's defaults: {shown}."
        )
    try:
        fingerprint = dataset_fingerprint(cfg)
    except MobituneError as error:
        raise MobituneError(
            f"{error} Reproducing run {original.info.run_id} needs the dataset it trained on; "
            "if it moved, pass its new place as an override: "
            f"`mobitune reproduce {original.info.run_id} data.root=/new/path`."
        ) from error
    if original_fingerprint and fingerprint != original_fingerprint:
        notes.append(
            f"DATA DIFFERS: the dataset at {cfg.data.root} (fingerprint {fingerprint}) is not the "
            f"one run {original.info.run_id} trained on (fingerprint {original_fingerprint}): "
            "files were added, removed, renamed or changed size, so metrics cannot be expected "
            "to match."
        )
    if not bool(cfg.trainer.get("deterministic", True)):
        notes.append(
            "trainer.deterministic is false: TensorFlow ops may not repeat exactly, so small "
            "differences are expected."
        )
    if original.info.status != "FINISHED":
        notes.append(f"The original run's status is {original.info.status}.")
    if announce is not None:
        announce(
            f"Reproducing run {original.info.run_id} ({original.info.run_name}) from its logged "
            f"config; the new run goes to {cfg.tracking.uri}."
        )
        for note in notes:
            announce(note)
    train(cfg)
    uri = str(cfg.tracking.uri)
    reproduced = _new_run(uri, original.info.run_id)
    comparisons = compare_runs(
        original, reproduced, store.client, mlflow.MlflowClient(tracking_uri=uri), tolerance
    )
    notes.extend(_code_notes(original, reproduced))
    return Reproduction(
        original_run_id=original.info.run_id,
        run_id=reproduced.info.run_id,
        tracking_uri=uri,
        tolerance=float(tolerance),
        comparisons=comparisons,
        original_fingerprint=original_fingerprint,
        fingerprint=reproduced.data.tags.get(TAG_DATA_FINGERPRINT, fingerprint),
        notes=notes,
    )


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _difference(item: MetricComparison) -> str:
    difference = item.difference
    if difference is None:
        return "-"
    if difference == 0:
        return "0"
    return f"{difference:+.3g}"


def format_report(reproduction: Reproduction) -> str:
    """The comparison table and the verdict, as printed by `mobitune reproduce`."""
    rows = [("metric", "original", "reproduced", "difference", "")]
    for item in reproduction.comparisons:
        status = item.note
        if item.compared and not item.matches:
            status = f"MISMATCH{': ' + item.note if item.note else ''}"
        elif not item.compared and item.note:
            status = f"not compared ({item.note})"
        rows.append(
            (item.name, _number(item.original), _number(item.reproduced), _difference(item), status)
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        f"Original run:   {reproduction.original_run_id}",
        f"Reproduced run: {reproduction.run_id} ({reproduction.tracking_uri})",
        "",
    ]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            row[column].rjust(widths[column]) for column in (1, 2, 3)
        ]
        lines.append(("  ".join(cells) + "  " + row[4]).rstrip())
    lines.append("")
    data = reproduction.data_matches
    if data is True:
        lines.append(f"Data: the same dataset (fingerprint {reproduction.fingerprint}).")
    elif data is False:
        lines.append(
            f"Data: DIFFERENT dataset: fingerprint {reproduction.fingerprint} now, "
            f"{reproduction.original_fingerprint} for the original run."
        )
    else:
        lines.append("Data: the original run logged no dataset fingerprint; not checked.")
    lines.extend(note for note in reproduction.notes if not note.startswith("DATA DIFFERS"))
    if reproduction.tolerance == 0:
        tolerance, required = "exactly", "an exact match was required"
    else:
        tolerance = f"within {reproduction.tolerance:g}"
        required = f"the tolerance is {reproduction.tolerance:g}"
    if reproduction.matched:
        lines.append(
            f"Reproduced: all {reproduction.compared_count} compared metrics match {tolerance}."
        )
    elif reproduction.compared_count == 0:
        lines.append("NOT REPRODUCED: the original run has no metrics to compare.")
    else:
        names = ", ".join(item.name for item in reproduction.mismatches)
        lines.append(
            f"NOT REPRODUCED: {len(reproduction.mismatches)} of {reproduction.compared_count} "
            f"compared metrics differ ({required}): {names}."
        )
    return "\n".join(lines)
