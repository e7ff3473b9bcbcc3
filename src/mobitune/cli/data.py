"""`mobitune data`: make and check datasets.

    mobitune data split SRC DST [--valid N | --valid-fraction F] [--test N | --test-fraction F]
                                [--seed S] [--link] [--force]
    mobitune data check ROOT [--json] [--max-image-pixels N] [--large-image-factor F]
                             [--limit N] [--workers N]
    mobitune data quickstart [DST] [--force]
    mobitune data download sign-language-digits [DST] [--url URL] [--timeout S]
                             [--valid N] [--test N] [--seed S] [--force]

Bad input raises MobituneError (printed as one paragraph, exit 2); `check` exits 2 when
the dataset is not usable, 0 otherwise (warnings included).
"""

from __future__ import annotations

import argparse
import sys

from mobitune.cli.arguments import (
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)


def _printable_output() -> None:
    """Never fail on a file name the terminal's encoding cannot show: escape it instead."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_split_amounts(parser: argparse.ArgumentParser, valid: int, test: int) -> None:
    for name, default, role in (("valid", valid, "validation"), ("test", test, "test")):
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            f"--{name}",
            type=positive_int,
            default=default,
            metavar="N",
            help=f"{role} images per class (default: {default})",
        )
        group.add_argument(
            f"--{name}-fraction",
            type=fraction,
            default=None,
            metavar="F",
            help=f"instead of --{name}: this fraction of each class, rounded, at least 1 "
            "(for classes of different sizes)",
        )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the per-class shuffle (default: 0)"
    )


def _split_handler(parsed: argparse.Namespace) -> int:
    _printable_output()
    from mobitune.datasets import split_dataset

    result = split_dataset(
        parsed.source,
        parsed.destination,
        valid=parsed.valid,
        test=parsed.test,
        valid_fraction=parsed.valid_fraction,
        test_fraction=parsed.test_fraction,
        seed=parsed.seed,
        force=parsed.force,
        link=parsed.link,
    )
    print(result.format_text())
    print(f"Train on it: mobitune train data.root={result.destination}")
    return 0


def _check_handler(parsed: argparse.Namespace) -> int:
    _printable_output()
    from mobitune.datacheck import check_dataset

    progress = None
    if sys.stderr.isatty() and not parsed.json:

        def progress(done: int, total: int) -> None:
            if done == total or done % 200 == 0:
                end = "\n" if done == total else ""
                print(f"\rDecoding images: {done:,}/{total:,}", end=end, file=sys.stderr)

    report = check_dataset(
        parsed.root,
        max_image_pixels=parsed.max_image_pixels,
        large_image_factor=parsed.large_image_factor,
        num_workers=parsed.workers,
        progress=progress,
    )
    print(
        report.to_json(ascii_only=True) if parsed.json else report.format_text(limit=parsed.limit)
    )
    return 0 if report.usable else 2


def _quickstart_handler(parsed: argparse.Namespace) -> int:
    _printable_output()
    from mobitune.datasets import (
        QUICKSTART_IMAGE_SIZE,
        default_quickstart_root,
        quickstart_dataset,
    )

    result = quickstart_dataset(parsed.destination, force=parsed.force)
    totals = result.totals()
    counts = ", ".join(f"{split} {count:,}" for split, count in totals.items())
    if result.created:
        print(
            f"Wrote the quickstart dataset to {result.destination}: {counts} images "
            f"(10 classes, {QUICKSTART_IMAGE_SIZE}x{QUICKSTART_IMAGE_SIZE} RGB PNG)."
        )
    else:
        print(f"The quickstart dataset is already in {result.destination} ({counts} images).")
    command = "mobitune train experiment=quickstart"
    if result.destination != default_quickstart_root().resolve():
        command += f" data.root={result.destination}"
    print(f"Train on it: {command}")
    return 0


def _download_handler(parsed: argparse.Namespace) -> int:
    _printable_output()
    from mobitune.datasets import download_dataset

    result = download_dataset(
        parsed.name,
        parsed.destination,
        url=parsed.url,
        timeout=parsed.timeout,
        valid=parsed.valid,
        test=parsed.test,
        seed=parsed.seed,
        force=parsed.force,
        progress=_stderr,
    )
    print(result.format_text())
    print(f"Train on it: mobitune train data.root={result.destination}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `mobitune data` and its actions."""
    from mobitune.datacheck import DEFAULT_LARGE_IMAGE_FACTOR, DEFAULT_MAX_IMAGE_PIXELS
    from mobitune.datasets import DEFAULT_DOWNLOAD_TIMEOUT, REMOTE_DATASETS

    parser = subparsers.add_parser(
        "data",
        help="make and check datasets: split, check, quickstart, download",
        description="Make datasets in mobitune's layout (ROOT/{train,valid,test}/<class>/) "
        "and check them.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    split = actions.add_parser(
        "split",
        help="split a folder of class folders into DST/train, DST/valid, DST/test",
        description="Per class: N images to valid/, M to test/, the rest to train/, chosen by "
        "a seeded shuffle of the sorted file list (same seed, same split, on any machine). "
        "Copies (or hard-links) the files; SRC is never changed. Hidden files and files that "
        "are not images are left out. DST/split.json records what went where.",
    )
    split.add_argument("source", metavar="SRC", help="folder with one sub-folder per class")
    split.add_argument("destination", metavar="DST", help="where train/, valid/, test/ go")
    _add_split_amounts(split, valid=30, test=5)
    split.add_argument(
        "--link",
        action="store_true",
        help="hard-link the files instead of copying them (no extra disk space; DST's files "
        "are then SRC's files: do not edit them in place)",
    )
    split.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty DST, replacing its train/, valid/, test/ and split.json",
    )
    split.set_defaults(handler=_split_handler)

    check = actions.add_parser(
        "check",
        help="report a dataset's classes, counts, images and every problem",
        description="Decode every image and report classes and counts per split, image "
        "sizes and modes, and every problem: fatal (the dataset cannot be used), skipped "
        "(a file left out), converted (to RGB) and warnings. Exit status 0 when the "
        "dataset is usable (warnings included), 2 when it is not.",
    )
    check.add_argument("root", metavar="ROOT", help="folder holding train/, valid/, test/")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help="warn about images with more pixels than this, as very large "
        f"(default: {DEFAULT_MAX_IMAGE_PIXELS:,}, like data.max_image_pixels)",
    )
    check.add_argument(
        "--large-image-factor",
        type=non_negative_float,
        default=DEFAULT_LARGE_IMAGE_FACTOR,
        metavar="F",
        help="warn about images with F times the median pixel count or more, as much "
        f"larger than the rest (default: {DEFAULT_LARGE_IMAGE_FACTOR:g}; 0: off; like "
        "data.large_image_factor)",
    )
    check.add_argument(
        "--limit",
        type=non_negative_int,
        default=10,
        metavar="N",
        help="list at most N problems of each kind (default: 10; 0: all)",
    )
    check.add_argument(
        "--workers",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="threads decoding images (default: 0, one per CPU core)",
    )
    check.set_defaults(handler=_check_handler)

    quickstart = actions.add_parser(
        "quickstart",
        help="write the offline demo dataset (digits from scikit-learn)",
        description="Write a demo dataset from the handwritten digits inside scikit-learn "
        "(no network): 10 classes, RGB PNG files, a fixed split. Nothing is written when "
        "DST already holds it. Then: mobitune train experiment=quickstart",
    )
    quickstart.add_argument(
        "destination",
        metavar="DST",
        nargs="?",
        default=None,
        help="where to write it (default: <project root>/data/quickstart, the default data.root)",
    )
    quickstart.add_argument(
        "--force",
        action="store_true",
        help="rewrite it, replacing DST's train/, valid/ and test/ even when not empty",
    )
    quickstart.set_defaults(handler=_quickstart_handler)

    download = actions.add_parser(
        "download",
        help="download a public dataset and split it",
        description="Download a public dataset (needs internet), extract its class folders "
        "and split them like `mobitune data split`. Known datasets: "
        + "; ".join(f"{name}: {item.description}" for name, item in REMOTE_DATASETS.items()),
    )
    download.add_argument("name", metavar="NAME", choices=sorted(REMOTE_DATASETS))
    download.add_argument(
        "destination",
        metavar="DST",
        nargs="?",
        default=None,
        help="where the split goes (default: <project root>/data/NAME)",
    )
    download.add_argument(
        "--url", default=None, help="download from here instead (a mirror, or file:///...zip)"
    )
    download.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_DOWNLOAD_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds without an answer (default: {DEFAULT_DOWNLOAD_TIMEOUT:g})",
    )
    download.add_argument(
        "--valid",
        type=positive_int,
        default=None,
        metavar="N",
        help="valid images per class (default: the dataset's, 30 for sign-language-digits)",
    )
    download.add_argument(
        "--test",
        type=positive_int,
        default=None,
        metavar="N",
        help="test images per class (default: the dataset's, 5 for sign-language-digits)",
    )
    download.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    download.add_argument("--force", action="store_true", help="write into a non-empty DST")
    download.set_defaults(handler=_download_handler)
