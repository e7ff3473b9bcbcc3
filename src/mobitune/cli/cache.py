"""`mobitune cache info|clear`: inspect and empty the frozen-feature cache.

The cache folder is `paths.cache_dir` of the config (default `<project root>/.cache/mobitune`);
`--dir` names another one, and Hydra-style overrides (`paths.root_dir=...`,
`cache.max_gb=...`) are applied as `mobitune train` would apply them.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mobitune.errors import MobituneError

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """'90s', '30m', '12h', '7d', '2w' (or a plain number of days) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise MobituneError(
            f"`--older-than {text}` is not an age. Use a number with a unit: 90s, 30m, 12h, "
            "7d or 2w (a plain number means days)."
        )
    return float(match.group(1)) * _AGE_UNITS[match.group(2) or "d"]


def _configured(overrides: Sequence[str]) -> Any:
    """The run config composed with `overrides`, resolved enough to read paths and cache."""
    from omegaconf import OmegaConf

    from mobitune.paths import config_dir
    from mobitune.registry import compose_config

    cfg = compose_config("config", [config_dir()], overrides)
    return OmegaConf.create(
        {
            "paths": {"cache_dir": OmegaConf.select(cfg, "paths.cache_dir")},
            "cache": OmegaConf.to_container(cfg.get("cache") or {}, resolve=True),
        }
    )


def open_cache(parsed: argparse.Namespace):
    """The FeatureCache the arguments name, and the bound it is kept under."""
    from mobitune.feature_cache import FeatureCache, cache_settings

    settings = cache_settings(_configured(parsed.overrides))
    directory = Path(parsed.dir).expanduser() if parsed.dir else settings.directory
    return FeatureCache(directory.resolve(), settings.max_bytes)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _entry_record(entry) -> dict[str, Any]:
    meta = entry.meta
    return {
        "key": entry.key,
        "size_bytes": entry.size_bytes,
        "last_used": _when(entry.last_used),
        "created": _when(entry.created),
        "dataset_root": meta.get("dataset_root"),
        "dataset_fingerprint": meta.get("dataset_fingerprint"),
        "split_sizes": meta.get("split_sizes"),
        "image_size": meta.get("image_size"),
        "interpolation": meta.get("interpolation"),
        "alpha": meta.get("alpha"),
        "weights": meta.get("weights"),
        "boundary": meta.get("boundary"),
        "feature_shape": meta.get("feature_shape"),
        "dtype": meta.get("stored_dtype", meta.get("dtype")),
        "path": str(entry.path),
    }


def info(parsed: argparse.Namespace) -> int:
    """Print where the cache is, its entries and how much of its bound they take."""
    from mobitune.feature_cache import format_bytes

    cache = open_cache(parsed)
    entries = cache.entries()
    total = sum(entry.size_bytes for entry in entries)
    incomplete = cache.incomplete_folders()
    if parsed.json:
        print(
            json.dumps(
                {
                    "location": str(cache.directory),
                    "max_bytes": cache.max_bytes,
                    "total_bytes": total,
                    "entries": [_entry_record(entry) for entry in reversed(entries)],
                    "incomplete": [str(path) for path in incomplete],
                },
                indent=2,
            )
        )
        return 0
    print(f"Feature cache: {cache.directory}")
    print(
        f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {format_bytes(total)} "
        f"of at most {format_bytes(cache.max_bytes)} (cache.max_gb)"
    )
    for entry in reversed(entries):  # most recently used first
        record = _entry_record(entry)
        sizes = record["split_sizes"] or {}
        shape = "x".join(str(size) for size in record["feature_shape"] or [])
        print(
            f"\n  {record['key']}  {format_bytes(entry.size_bytes)}  last used "
            f"{record['last_used']}  (created {record['created']})\n"
            f"    dataset   {record['dataset_root']} (fingerprint "
            f"{record['dataset_fingerprint']}; train/valid/test "
            f"{sizes.get('train')}/{sizes.get('valid')}/{sizes.get('test')})\n"
            f"    images    {record['image_size']} px, {record['interpolation']}\n"
            f"    model     MobileNet alpha={record['alpha']}, weights {record['weights']}\n"
            f"    features  output of {record['boundary']}, {shape} {record['dtype']}"
        )
    if incomplete:
        print(f"\n{len(incomplete)} entr{'y' if len(incomplete) == 1 else 'ies'} being written:")
        for path in incomplete:
            print(f"  {path}")
    return 0


def clear(parsed: argparse.Namespace) -> int:
    """Remove all entries, or those matching --key / --older-than."""
    from mobitune.feature_cache import format_bytes

    cache = open_cache(parsed)
    older_than = parse_age(parsed.older_than) if parsed.older_than else None
    keys = parsed.key or None
    if keys:
        known = [entry.key for entry in cache.entries()]
        unknown = [key for key in keys if not any(name.startswith(key) for name in known)]
        if unknown:
            raise MobituneError(
                f"No cache entry key starts with {', '.join(map(repr, unknown))} in "
                f"{cache.directory}. `mobitune cache info` lists the keys."
            )
    if parsed.dry_run:
        now = time.time()
        chosen = [
            entry
            for entry in cache.entries()
            if (keys is None or any(entry.key.startswith(key) for key in keys))
            and (older_than is None or now - entry.last_used >= older_than)
        ]
        for entry in chosen:
            print(f"would remove {entry.key} ({format_bytes(entry.size_bytes)})")
        print(f"{len(chosen)} entries, {format_bytes(sum(e.size_bytes for e in chosen))}")
        return 0
    removed, busy = cache.clear(keys=keys, older_than_seconds=older_than)
    for entry in removed:
        print(f"removed {entry.key} ({format_bytes(entry.size_bytes)})")
    for entry in busy:
        print(f"kept {entry.key}: a running job is writing or opening it")
    freed = sum(entry.size_bytes for entry in removed)
    print(
        f"Removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
        f"({format_bytes(freed)}) from {cache.directory}"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`mobitune cache info` and `mobitune cache clear`."""
    parser = subparsers.add_parser(
        "cache",
        help="inspect or empty the frozen-feature cache: mobitune cache info|clear",
        description="The frozen-feature cache (paths.cache_dir): features of the frozen "
        "layers, computed once and shared by runs and sweep trials.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument(
            "--dir", help="the cache folder (default: paths.cache_dir of the config)"
        )
        action.add_argument(
            "overrides",
            nargs="*",
            metavar="OVERRIDE",
            help="config overrides, as for mobitune train (e.g. paths.root_dir=/x)",
        )

    info_parser = actions.add_parser("info", help="list entries, sizes, keys and the total")
    common(info_parser)
    info_parser.add_argument("--json", action="store_true", help="print JSON")
    info_parser.set_defaults(handler=info)

    clear_parser = actions.add_parser(
        "clear", help="remove all entries, or those chosen by --key / --older-than"
    )
    common(clear_parser)
    clear_parser.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help="remove the entry whose key starts with KEY (repeatable)",
    )
    clear_parser.add_argument(
        "--older-than",
        metavar="AGE",
        help="remove entries not used for AGE (e.g. 30m, 12h, 7d, 2w)",
    )
    clear_parser.add_argument(
        "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    clear_parser.set_defaults(handler=clear)
