"""Benchmark mobitune against the seed tutorial's own training loop, on this machine.

One run, same data, same machine, side by side:
  1. one trial: the seed-style Keras 3 loop (benchmarks/seed_loop.py) against
     `mobitune train experiment=seed model.weights=null` for the same epochs, with the
     frozen-feature cache cold (built in the run), warm (reused) and off;
  2. a profile of where a training step's time goes (benchmarks/profile_layers.py);
  3. a sweep: K trials of `mobitune sweep seed_space` with cache and pruning, against the
     same K trials without either.
It prints seconds per epoch, trial and sweep wall time, peak memory and the ratios, and
writes them with a description of the machine to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run.py                      # the full benchmark (hours)
    .venv/bin/python benchmarks/run.py --image-size 64 --epochs 1 \\
        --max-images-per-class 10 --sweep-trials 2 --sweep-epochs 1,2   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
PROJECT_ROOT = BENCHMARKS.parent
SHARED_IMAGES = PROJECT_ROOT.parent / "shared" / "datasets" / "sign-language-digits" / "images"
MOBITUNE = Path(sys.executable).parent / "mobitune"
# Issue 6's targets.
TRIAL_SPEEDUP_TARGET = 3.0
SWEEP_SPEEDUP_TARGET = 10.0
MEMORY_TARGET_BYTES = 4 * 1024**3


@dataclass
class Measured:
    """One subprocess: its wall time, peak memory and exit status."""

    label: str
    command: list[str]
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    returncode: int = 0
    log: str = ""
    details: dict = field(default_factory=dict)


def measure(label: str, command: list[str], log_path: Path, cwd: Path, env: dict) -> Measured:
    """Run `command`, timing it and reading its peak RSS (with its children's) from wait4."""
    print(f"\n=== {label}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    result = Measured(
        label=label,
        command=command,
        seconds=seconds,
        # Linux reports ru_maxrss in KiB.
        peak_rss_bytes=int(usage.ru_maxrss) * 1024,
        returncode=process.returncode,
        log=str(log_path),
    )
    print(
        f"    {seconds:.1f} s, peak RSS {result.peak_rss_bytes / 1024**3:.2f} GiB, "
        f"exit {result.returncode} (log: {log_path})",
        flush=True,
    )
    if result.returncode != 0:
        tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-3000:]
        print(f"--- last lines of {log_path}:\n{tail}", flush=True)
    return result


# --------------------------------------------------------------------------- machine, data


def describe_machine() -> dict:
    """CPU model, cores, memory, load and library versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, tensorflow as tf, keras, mlflow, optuna; print(json.dumps({"
            "'tensorflow': tf.__version__, 'keras': keras.__version__, "
            "'mlflow': mlflow.__version__, 'optuna': optuna.__version__}))",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    try:
        libraries = json.loads(versions.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        libraries = {}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        **libraries,
    }


def prepare_data(args: argparse.Namespace, workdir: Path) -> Path:
    """The dataset to benchmark on: --data-root, or the seed's split of the shared images."""
    if args.data_root:
        return Path(args.data_root).resolve()
    if not SHARED_IMAGES.is_dir():
        raise SystemExit(
            f"No dataset: {SHARED_IMAGES} is absent. Pass --data-root with a folder holding "
            "train/, valid/ and test/ (one sub-folder per class in each)."
        )
    root = workdir / "data"
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(args.split_seed)
    for class_dir in sorted(path for path in SHARED_IMAGES.iterdir() if path.is_dir()):
        files = sorted(path for path in class_dir.iterdir() if path.is_file())
        rng.shuffle(files)
        valid, test, train = files[:30], files[30:35], files[35:]
        if args.max_images_per_class:
            train = train[: args.max_images_per_class]
        for split, chosen in (("train", train), ("valid", valid), ("test", test)):
            folder = root / split / class_dir.name
            folder.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copy2(path, folder / path.name)  # copies: the shared folder is read-only
    return root


def count_images(root: Path) -> str:
    counts = [
        sum(1 for path in (root / split).rglob("*") if path.is_file())
        for split in ("train", "valid", "test")
    ]
    return "train/valid/test " + "/".join(str(count) for count in counts) + " images"


# --------------------------------------------------------------------------- one trial


def mobitune_environment(workdir: Path) -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MOBITUNE_ROOT=str(workdir))


def run_script(label: str, name: str, arguments: list[str], workdir: Path) -> Measured:
    """Measure `benchmarks/NAME.py ARGUMENTS --output=...`; its JSON output becomes details."""
    output = workdir / f"{name}.json"
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments, f"--output={output}"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = measure(label, command, workdir / f"{name}.log", workdir, environment)
    if result.returncode == 0:
        result.details = json.loads(output.read_text())
    return result


def run_seed_loop(args, data_root: Path, workdir: Path) -> Measured:
    arguments = [
        f"--data-root={data_root}",
        f"--image-size={args.image_size}",
        f"--epochs={args.epochs}",
    ]
    return run_script("seed-style loop", "seed_loop", arguments, workdir)


def trial_store(workdir: Path) -> str:
    """One MLflow store for the one-trial runs, created beforehand (untimed): creating a
    store's schema takes seconds, once per project, not once per run."""
    folder = workdir / "trial-store"
    if folder.exists():
        shutil.rmtree(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mobitune.tracking import prepare_experiment; prepare_experiment({uri!r}, "
            "'mobitune')",
        ],
        check=True,
        capture_output=True,
    )
    return uri


def run_mobitune(
    args, data_root: Path, workdir: Path, uri: str, name: str, *overrides: str
) -> Measured:
    folder = workdir / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    command = [
        str(MOBITUNE),
        "train",
        "experiment=seed",
        "model.weights=null",
        f"data.root={data_root}",
        f"data.image_size={args.image_size}",
        f"trainer.epochs={args.epochs}",
        f"tracking.uri={uri}",
        f"tracking.run_name=benchmark-{name}",
        f"paths.cache_dir={workdir / 'cache'}",
        f"hydra.run.dir={folder / 'hydra'}",
        *overrides,
    ]
    result = measure(
        f"mobitune train ({name})",
        command,
        folder / "train.log",
        workdir,
        mobitune_environment(workdir),
    )
    if result.returncode == 0:
        result.details = read_mlflow_run(uri, f"benchmark-{name}")
    return result


def read_mlflow_run(uri: str, run_name: str) -> dict:
    """Metrics, per-epoch history and cache params of the named run in a store."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("mobitune")
    [run] = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'"
    )
    history = {
        name: [point.value for point in client.get_metric_history(run.info.run_id, name)]
        for name in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
    }
    params = run.data.params
    return {
        "epoch_seconds": history.pop("epoch_seconds"),
        "history": history,
        "metrics": dict(run.data.metrics),
        "cache_status": params.get("cache.status"),
        "trainable_params": int(params.get("model.trainable_params", 0)),
        "total_params": int(params.get("model.total_params", 0)),
    }


def steady_epoch_seconds(epoch_seconds: list[float]) -> float | None:
    """Median seconds per epoch, leaving out the first (tracing, warm-up) when there are more."""
    if not epoch_seconds:
        return None
    steady = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    return statistics.median(steady)


def run_profile(args, data_root: Path, workdir: Path) -> Measured:
    arguments = [f"--image-size={args.image_size}", f"--data-root={data_root}"]
    return run_script("profile", "profile_layers", arguments, workdir)


# --------------------------------------------------------------------------- the sweep


def sweep_available(workdir: Path) -> str | None:
    """None if `mobitune sweep seed_space` exists here; otherwise why not."""
    probe = subprocess.run(
        [str(MOBITUNE), "sweep", "--help"],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=mobitune_environment(workdir),
        timeout=300,
    )
    if probe.returncode != 0 or "seed_space" not in probe.stdout:
        return (
            "`mobitune sweep` with the `seed_space` sweep is not available in this checkout "
            f"(exit {probe.returncode}): {(probe.stderr or probe.stdout).strip()[-300:]}"
        )
    return None


def run_sweep(args, data_root: Path, workdir: Path, name: str, cached: bool) -> Measured:
    folder = workdir / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    command = [
        str(MOBITUNE),
        "sweep",
        "seed_space",
        "model.weights=null",
        f"data.root={data_root}",
        f"data.image_size={args.image_size}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
        f"hydra.sweeper.n_trials={args.sweep_trials}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={folder / 'trials'}",
        f"study.pruner.name={'median' if cached else 'none'}",
        f"cache.enabled={'true' if cached else 'false'}",
        f"paths.cache_dir={workdir / 'sweep-cache'}",
    ]
    if args.sweep_epochs:
        low, high = args.sweep_epochs
        # The Optuna sweeper reads a sweep override as the parameter's search space.
        command.append(f"trainer.epochs=range({low},{high + 1})")
        if not low <= 30 <= high:  # the seed preset's 30 epochs are outside the range
            command.append("study.enqueue_seed=false")
    result = measure(
        f"sweep ({name})", command, folder / "sweep.log", workdir, mobitune_environment(workdir)
    )
    result.details = read_study(storage)
    return result


def read_study(storage: str) -> dict:
    """Trial states, sampled epochs, epochs run and the best value of the sweep's study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        [summary] = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
    except Exception as error:  # noqa: BLE001 - reported, the benchmark goes on
        return {"error": f"{type(error).__name__}: {error}"}
    trials = []
    for trial in study.trials:
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "params": trial.params,
                "value": trial.value,
                "epochs_run": len(trial.intermediate_values) or trial.params.get("trainer.epochs"),
            }
        )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "study": summary.study_name,
        "trials": trials,
        "best_value": study.best_value if finished else None,
        "complete": len(finished),
        "pruned": sum(t["state"] == "PRUNED" for t in trials),
        "failed": sum(t["state"] == "FAIL" for t in trials),
    }


# --------------------------------------------------------------------------- report


def gib(size: float | None) -> str:
    return "n/a" if not size else f"{size / 1024**3:.2f} GiB"


def number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def trial_table(results: dict) -> tuple[list[str], dict]:
    rows = [
        "| run | s/epoch (steady) | first epoch s | trial wall s | peak RSS | val_accuracy "
        "| test_accuracy | trainable params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    figures = {}
    for key, label in (
        ("seed", "seed-style loop (Keras 3)"),
        ("cold", "mobitune, cache cold (builds it)"),
        ("warm", "mobitune, cache warm (reuses it)"),
        ("uncached", "mobitune, cache off"),
    ):
        run = results.get(key)
        if run is None or run.returncode != 0:
            if run is not None:
                rows.append(f"| {label} | failed (exit {run.returncode}, see {run.log}) |||||||")
            continue
        details = run.details
        epochs = details.get("epoch_seconds", [])
        if key == "seed":
            val = details["history"]["val_accuracy"][-1]
            test = details["test_accuracy"]
        else:
            val = details["metrics"].get("val_accuracy")
            test = details["metrics"].get("test_accuracy")
        per_epoch = steady_epoch_seconds(epochs)
        figures[key] = {"per_epoch": per_epoch, "wall": run.seconds, "rss": run.peak_rss_bytes}
        rows.append(
            f"| {label} | {number(per_epoch, 2)} | {number(epochs[0] if epochs else None, 2)} "
            f"| {run.seconds:.1f} | {gib(run.peak_rss_bytes)} | {number(val, 4)} "
            f"| {number(test, 4)} | {details.get('trainable_params', 'n/a'):,} |"
        )
    return rows, figures


def render(results: dict, args: argparse.Namespace, machine: dict, data_root: Path) -> str:
    lines = [
        "# Benchmark: mobitune against the seed tutorial's loop",
        "",
        f"Written by `benchmarks/run.py` on {time.strftime('%Y-%m-%d %H:%M')}. "
        "Command: `" + " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]) + "`",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; memory {gib(machine['memory_bytes'])}",
        f"- Python {machine['python']}, TensorFlow {machine.get('tensorflow')}, "
        f"Keras {machine.get('keras')}, MLflow {machine.get('mlflow')}, "
        f"Optuna {machine.get('optuna')}",
        f"- {machine['platform']}",
        "- Load average (1, 5, 15 min) at start: "
        + ", ".join(f"{value:.2f}" for value in machine["load_average_at_start"])
        + "; at end: "
        + ", ".join(f"{value:.2f}" for value in os.getloadavg())
        + " (a load above the core count means other work shared the CPU: timings are noisy)",
        "",
        "## Setup",
        "",
        f"- Data: {data_root}"
        + (f" ({results['data_counts']})" if results.get("data_counts") else ""),
        f"- {args.image_size} px, {args.epochs} epoch(s) per one-trial run, batch 10, the "
        "seed's model (MobileNet alpha 1.0 cut at global average pooling, Dense softmax, "
        "last 23 layers trainable, Adam 1e-4), random initial weights (ImageNet weights "
        "cannot be downloaded offline; the compute is the same), nearest-neighbour resizing "
        "as the seed's ImageDataGenerator did.",
        "- Seconds per epoch: median over epochs after the first (the first includes tracing). "
        "Trial wall time: the whole process, start to exit (imports, data, model, training, "
        "evaluation, MLflow logging; the MLflow store exists beforehand, as in a project "
        "that has run before). Peak RSS: the process and its children (wait4).",
    ]
    summary = []
    if "seed" in results:
        rows, figures = trial_table(results)
        lines += ["", "## One trial", "", *rows]
        seed = figures.get("seed", {})
        lines.append("")
        for key, label in (
            ("cold", "cache cold"),
            ("warm", "cache warm"),
            ("uncached", "cache off"),
        ):
            other = figures.get(key)
            if not other or not seed:
                continue
            per_epoch = ratio(seed.get("per_epoch"), other.get("per_epoch"))
            wall = ratio(seed.get("wall"), other.get("wall"))
            line = (
                f"- Seed loop / mobitune ({label}): {number(per_epoch, 2, 'x')} per epoch, "
                f"{number(wall, 2, 'x')} trial wall time"
            )
            lines.append(line)
            summary.append(line)
        for key in ("cold", "warm"):
            other = figures.get(key)
            if other and seed:
                wall = ratio(seed.get("wall"), other.get("wall"))
                met = wall is not None and wall >= TRIAL_SPEEDUP_TARGET
                line = (
                    f"- Target >= {TRIAL_SPEEDUP_TARGET:g}x per trial ({key} cache): "
                    f"{'met' if met else 'NOT met'} ({number(wall, 2, 'x')})"
                )
                lines.append(line)
                summary.append(line)
        cached_rss = max(
            (figures[k]["rss"] for k in ("cold", "warm") if k in figures), default=None
        )
        if cached_rss:
            met = cached_rss < MEMORY_TARGET_BYTES
            line = (
                f"- Peak RSS with the cache {gib(cached_rss)}: target < 4 GiB "
                f"{'met' if met else 'NOT met'}"
                + (
                    ""
                    if args.image_size == 224
                    else f" (measured at {args.image_size} px, not 224)"
                )
            )
            lines.append(line)
            summary.append(line)
        cold, warm = results.get("cold"), results.get("warm")
        if cold is not None and cold.returncode == 0:
            cold_metrics = cold.details["metrics"]
            warm_seconds = (
                warm.details["metrics"].get("cache.feature_seconds")
                if warm is not None and warm.returncode == 0
                else None
            )
            lines.append(
                f"- Cache entry built in the cold run in "
                f"{number(cold_metrics.get('cache.feature_seconds'), 1)} s "
                f"({number(cold_metrics.get('cache.size_mb'), 0)} MB); the warm run loaded it "
                f"in {number(warm_seconds, 2)} s."
            )
        lines += [
            "",
            "Metrics differ between the seed loop and mobitune because their initial random "
            "weights and shuffles differ; mobitune with the cache on and off agree within 1e-3 "
            "(tests/test_feature_cache.py asserts it).",
        ]
    profile = results.get("profile")
    if profile is not None and profile.returncode == 0:
        sys.path.insert(0, str(BENCHMARKS))
        from profile_layers import report

        lines += ["", "## Where the time goes", "", "```", report(profile.details), "```"]
    sweep = results.get("sweep")
    if sweep is not None:
        lines += ["", "## Sweep", ""]
        if isinstance(sweep, str):
            lines.append(f"Skipped: {sweep}")
        else:
            lines += render_sweep(sweep, results, args, summary)
    lines += ["", "## Summary", "", *summary] if summary else []
    return "\n".join(lines) + "\n"


def render_sweep(sweep: dict, results: dict, args, summary: list[str]) -> list[str]:
    fast, slow = sweep["fast"], sweep["slow"]
    lines = [
        f"{args.sweep_trials} trials of `seed_space`"
        + (f", trainer.epochs narrowed to {args.sweep_epochs}" if args.sweep_epochs else "")
        + "; each sweep has its own Optuna storage and starts with an empty feature cache.",
        "",
        "| sweep | wall s | peak RSS | complete | pruned | failed | epochs run "
        "| best val_accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, run in (("cache + median pruning", fast), ("no cache, no pruning", slow)):
        details = run.details
        if run.returncode != 0:
            lines.append(f"| {label} | failed (exit {run.returncode}, see {run.log}) |||||||")
            continue
        epochs = sum(int(t["epochs_run"] or 0) for t in details.get("trials", []))
        lines.append(
            f"| {label} | {run.seconds:.1f} | {gib(run.peak_rss_bytes)} | "
            f"{details.get('complete', 'n/a')} | {details.get('pruned', 'n/a')} | "
            f"{details.get('failed', 'n/a')} | {epochs} | {number(details.get('best_value'), 4)} |"
        )
    if fast.returncode != 0 or slow.returncode != 0:
        summary.append("- Sweep benchmark failed: see the logs named above.")
        return lines
    measured = ratio(slow.seconds, fast.seconds)
    line = f"- Without cache and pruning / with: {number(measured, 2, 'x')} sweep wall time"
    lines += ["", line]
    summary.append(line)
    seed = results.get("seed")
    if seed is not None and seed.returncode == 0:
        per_epoch = steady_epoch_seconds(seed.details["epoch_seconds"])
        overhead = seed.seconds - sum(seed.details["epoch_seconds"])
        sampled = [
            int(t["params"].get("trainer.epochs", args.epochs))
            for t in fast.details.get("trials", [])
        ]
        estimate = sum(epochs * per_epoch + overhead for epochs in sampled)
        speedup = ratio(estimate, fast.seconds)
        fast_best = fast.details.get("best_value")
        seed_val = seed.details["history"]["val_accuracy"][-1]
        met = speedup is not None and speedup >= SWEEP_SPEEDUP_TARGET
        line = (
            f"- The same {len(sampled)} trials run by the seed-style loop: about "
            f"{estimate:.0f} s (each trial's sampled epochs x the seed loop's "
            f"{per_epoch:.1f} s/epoch + its {overhead:.0f} s start-up; an estimate: the seed "
            "loop's cost per epoch also changes with the trainable layers). Speed-up "
            f"{number(speedup, 1, 'x')}; target >= {SWEEP_SPEEDUP_TARGET:g}x "
            f"{'met' if met else 'NOT met'}. Best val_accuracy {number(fast_best, 4)} "
            f"(the seed loop's single trial: {seed_val:.4f})."
        )
        lines.append(line)
        summary.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", help="dataset folder (default: split the shared images)")
    parser.add_argument("--max-images-per-class", type=int, help="cap the training images")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the one-trial runs")
    parser.add_argument("--sweep-trials", type=int, default=20, help="K trials per sweep")
    parser.add_argument(
        "--sweep-epochs",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        help="LOW,HIGH: narrow seed_space's trainer.epochs range (default: the sweep's own)",
    )
    parser.add_argument("--skip-trial", action="store_true", help="no one-trial comparison")
    parser.add_argument("--skip-uncached", action="store_true", help="no cache-off mobitune run")
    parser.add_argument("--skip-sweep", action="store_true", help="no sweep comparison")
    parser.add_argument(
        "--workdir",
        default=str(BENCHMARKS / "_work"),
        help="data, logs and stores go here (default: benchmarks/_work, git-ignored)",
    )
    parser.add_argument("--output", default=str(BENCHMARKS / "RESULTS.md"))
    args = parser.parse_args(argv)

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"Working folder: {workdir}")
    machine = describe_machine()
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, {gib(machine['memory_bytes'])}")
    data_root = prepare_data(args, workdir)
    results: dict = {"data_counts": count_images(data_root)}
    print(f"Dataset: {data_root} ({results['data_counts']})")
    if not args.skip_trial:
        results["seed"] = run_seed_loop(args, data_root, workdir)
        cache_folder = workdir / "cache"
        if cache_folder.exists():
            shutil.rmtree(cache_folder)
        uri = trial_store(workdir)
        results["cold"] = run_mobitune(args, data_root, workdir, uri, "cold")
        results["warm"] = run_mobitune(args, data_root, workdir, uri, "warm")
        if not args.skip_uncached:
            results["uncached"] = run_mobitune(
                args, data_root, workdir, uri, "uncached", "cache.enabled=false"
            )
        results["profile"] = run_profile(args, data_root, workdir)
    if not args.skip_sweep:
        why_not = sweep_available(workdir)
        if why_not:
            print(f"\nSweep benchmark skipped: {why_not}")
            results["sweep"] = why_not
        else:
            cache_folder = workdir / "sweep-cache"
            if cache_folder.exists():
                shutil.rmtree(cache_folder)
            results["sweep"] = {
                "fast": run_sweep(args, data_root, workdir, "sweep-cache-pruning", cached=True),
                "slow": run_sweep(args, data_root, workdir, "sweep-plain", cached=False),
            }
    text = render(results, args, machine, data_root)
    Path(args.output).write_text(text, encoding="utf-8")
    raw = {
        key: (
            asdict(value)
            if isinstance(value, Measured)
            else {k: asdict(v) for k, v in value.items()}
            if isinstance(value, dict)
            else value
        )
        for key, value in results.items()
    }
    (workdir / "results.json").write_text(
        json.dumps({"machine": machine, **raw}, indent=2, default=str)
    )
    print("\n" + text)
    print(f"Written to {args.output}; raw figures in {workdir / 'results.json'}")
    measured = [value for value in results.values() if isinstance(value, Measured)]
    if isinstance(results.get("sweep"), dict):
        measured += list(results["sweep"].values())
    failed = [value.label for value in measured if value.returncode != 0]
    if failed:
        print(f"Failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
