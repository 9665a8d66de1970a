#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["wandb>=0.31", "neptune>=1.14", "pyarrow>=26", "polars>=2.1"]
# ///
"""Make the bundled sample runs: small offline runs written by the real wandb and neptune clients.

Run from the repository root: `uv run samples/make_samples.py`. The W&B runs are made in a git clone and
log numbers, a string, a boolean, a histogram, console lines and system metrics. W&B: only the
`run-*.wandb` logs are kept, under samples/wandb/offline-run-*/. Neptune: the offline runs under samples/neptune/.neptune/, and
the same runs as a neptune-exporter archive under samples/neptune/archive/ (what users hold since the
hosted service closed): one `<run>_part_0.parquet` per run in the exporter's 14-column schema, the ids
`SPD-1`, `SPD-2`, … a sync would have given them. They are what the README quick starts use.
samples/neptune/forks/ is a Neptune 3 project as neptune-exporter's neptune3 exporter writes it: runs by
custom run id in two experiments, forks (one at a fractional step) holding only their own points.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "wandb"
NEPTUNE_SAMPLES = HERE / "neptune"
NEPTUNE_PROJECT = "graph-denoise-team/spectral-denoising"
MODELS = {"filter_bank": 0.10, "self_attention": 0.30, "linear_pe": 0.60, "digress_default": 1.20}
DATASETS = {"ring_of_cliques": 1.0, "sbm": 1.6, "pyg_enzymes": 2.4}
STEPS = 60


def curves(stage: str, model: str, dataset: str, k: int, seed: int) -> tuple[str, dict, list[float], float]:
    """A run's name, config, test/mse curve and the mse it converges to (the same for W&B and Neptune)."""
    rng = random.Random(f"{stage}{model}{dataset}{k}{seed}")
    lr = rng.choice([1e-3, 3e-4])
    name = f"{stage}_{model}_{dataset}_k{k}_lr{lr:.0e}_s{seed}".replace("e-0", "e-")
    final_mse = MODELS[model] * DATASETS[dataset] * (1 + 0.1 * math.log2(k / 8)) * rng.uniform(0.9, 1.1)
    config = {
        "model": {"type": model, "k": k},
        "data": {"graph_type": dataset, "noise_eps": 0.1},
        "optimizer": {"lr": lr, "weight_decay": 1e-4},
        "seed": seed,
    }
    mse = [
        final_mse * (1 + 4 * (1 - (step + 1) / STEPS) ** 2) * rng.uniform(0.97, 1.03) for step in range(STEPS)
    ]
    return name, config, mse, final_mse


def phase(step: int) -> str:
    return "warmup" if step < STEPS // 6 else "main"


def make_run(stage: str, model: str, dataset: str, k: int, seed: int, *, fail: bool = False) -> None:
    """One W&B run as a training script logs it: numbers, a string, a boolean and a histogram every
    20 steps in the same rows, console lines on stdout and stderr, system metrics sampled often."""
    import wandb

    name, config, mse, final_mse = curves(stage, model, dataset, k, seed)
    run = wandb.init(
        mode="offline",
        entity="graph_denoise_team",
        project="spectral_denoising",
        name=name,
        group=stage,
        job_type="train",
        tags=[stage, model],
        config=config,
        # the program as the clone's script (not this maker's path on the machine that made the samples)
        settings=wandb.Settings(
            x_stats_sampling_interval=0.1, program="train.py", program_relpath="train.py"
        ),
    )
    print(f"training {name}")
    best = math.inf
    for step, value in enumerate(mse):
        row = {"train/loss": value * 1.1, "test/mse": value, "test/accuracy": max(0.0, 1 - value / 4)}
        row |= {"train/phase": phase(step), "test/improved": value < best}
        if step % 20 == 0:  # the errors of a batch: a histogram as a tracker draws it
            errors = [value * (1 + 0.1 * math.sin(step + i)) for i in range(64)]
            row["test/errors"] = wandb.Histogram(errors, num_bins=8)
        best = min(best, value)
        run.log(row)
        time.sleep(0.01)  # long enough a run for several system-metric samples
        if step % 20 == 19:
            print(f"step {step + 1}/{STEPS}: test/mse {value:.4f}")
        if fail and step == STEPS // 2:
            print("loss is nan: stopping", file=sys.stderr)
            run.log({"train/loss": float("nan")})
            break
    run.summary["best/test_mse"] = final_mse
    run.finish(exit_code=1 if fail else 0)


QUIET = {
    "capture_hardware_metrics": False, "capture_stdout": False, "capture_stderr": False,
    "capture_traceback": False, "source_files": [], "git_ref": False,
}  # fmt: skip


def make_neptune_run(stage: str, model: str, dataset: str, k: int, seed: int, *, fail: bool = False) -> None:
    import neptune

    name, config, mse, _ = curves(stage, model, dataset, k, seed)
    run = neptune.init_run(
        project=NEPTUNE_PROJECT, mode="offline", name=name, tags=[stage, model], **QUIET
    )  # fmt: skip
    run["parameters"] = config
    for step, value in enumerate(mse):
        run["train/phase"].append(phase(step), step=step)
        run["train/loss"].append(value * 1.1, step=step)
        run["test/mse"].append(value, step=step)
        run["test/accuracy"].append(max(0.0, 1 - value / 4), step=step)
        if fail and step == STEPS // 2:
            break
    if fail:
        run["sys/failed"] = True
    run.stop()


def exporter_schema():  # -> pyarrow.Schema (imported inside)
    """neptune-exporter's parquet schema (its model.SCHEMA: 14 columns)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("project_id", pa.string()), ("run_id", pa.string()), ("attribute_path", pa.string()),
            ("attribute_type", pa.string()), ("step", pa.decimal128(18, 6)),
            ("timestamp", pa.timestamp("ms", tz="UTC")), ("int_value", pa.int64()),
            ("float_value", pa.float64()), ("string_value", pa.string()), ("bool_value", pa.bool_()),
            ("datetime_value", pa.timestamp("ms", tz="UTC")), ("string_set_value", pa.list_(pa.string())),
            ("file_value", pa.struct([("path", pa.string())])),
            ("histogram_value", pa.struct([("type", pa.string()), ("edges", pa.list_(pa.float64())),
                                           ("values", pa.list_(pa.float64()))])),
        ]
    )  # fmt: skip


def archive_rows(run, run_id: str) -> list[dict]:
    """One offline run (replayed by shared.neptune.offline) as neptune-exporter's rows."""
    from datetime import UTC, datetime
    from decimal import Decimal

    base = {"project_id": NEPTUNE_PROJECT, "run_id": run_id}
    created = datetime.fromisoformat(run.created_at)
    last = datetime.fromtimestamp(run.last_at, UTC)
    simple = {
        **run.scalars,
        "sys/id": run_id,
        "sys/creation_time": created,
        "sys/modification_time": last,
        "sys/ping_time": last,
        "sys/running_time": (last - created).total_seconds(),
        **{path: sorted(values) for path, values in run.string_sets.items()},
    }
    kinds = {bool: ("bool", "bool_value"), int: ("int", "int_value"), float: ("float", "float_value"),
             str: ("string", "string_value"), datetime: ("datetime", "datetime_value"),
             list: ("string_set", "string_set_value")}  # fmt: skip
    rows = []
    for path, value in sorted(simple.items()):
        kind, column = kinds[type(value)]
        rows.append(base | {"attribute_path": path, "attribute_type": kind, column: value})
    for path, (steps, values) in sorted(run.series.items()):
        for step, value, at in zip(steps, values, run.series_times[path], strict=True):
            rows.append(
                base | {"attribute_path": path, "attribute_type": "float_series", "step": Decimal(f"{step:.6f}"),
                        "timestamp": datetime.fromtimestamp(at, UTC), "float_value": value}
            )  # fmt: skip
    for path, points in sorted(run.strings.items()):
        for step, at, value in points:
            rows.append(
                base | {"attribute_path": path, "attribute_type": "string_series", "step": Decimal(f"{step:.6f}"),
                        "timestamp": datetime.fromtimestamp(at, UTC), "string_value": value}
            )  # fmt: skip
    return rows


def make_neptune_samples(scratch: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE.parent))
    from shared.neptune.archive import sanitized_names
    from shared.neptune.offline import OfflineSource

    os.chdir(scratch)
    for index, (model, dataset) in enumerate((m, d) for m in MODELS for d in DATASETS):
        make_neptune_run("stage2c", model, dataset, k=[8, 16, 32][index % 3], seed=index % 2)
    make_neptune_run("stage3", "filter_bank", "pyg_enzymes", k=8, seed=0, fail=True)
    shutil.rmtree(NEPTUNE_SAMPLES, ignore_errors=True)
    shutil.copytree(
        scratch / ".neptune", NEPTUNE_SAMPLES / ".neptune", ignore=shutil.ignore_patterns("*.lock")
    )
    source = OfflineSource(NEPTUNE_SAMPLES)
    folder = NEPTUNE_SAMPLES / "archive" / sanitized_names(NEPTUNE_PROJECT)[0]
    folder.mkdir(parents=True)
    runs = sorted((source.raw_run(run_id) for run_id in source.run_ids()), key=lambda run: run.created_at)
    for number, run in enumerate(runs, start=1):
        run_id = f"SPD-{number}"
        table = pa.Table.from_pylist(archive_rows(run, run_id), schema=exporter_schema())
        pq.write_table(table, folder / f"{sanitized_names(run_id)[0]}_part_0.parquet", compression="snappy")
    print(f"wrote {len(runs)} Neptune sample runs to {NEPTUNE_SAMPLES} (offline and archive)")


NEPTUNE3_PROJECT = "graph-denoise-team/spectral-denoising-v3"
# (custom run id, experiment, parent, fork step, is head, learning rate): a chain with a fractional fork
# and a branch; the heads are the runs each experiment is shown by.
NEPTUNE3_RUNS = [
    ("lr-base", "lr-sweep", None, None, False, 1e-2),
    ("lr-low", "lr-sweep", "lr-base", 30.0, False, 6e-3),
    ("lr-low-warm", "lr-sweep", "lr-low", 45.5, True, 4e-3),
    ("w-256", "width-sweep", None, None, False, 2e-3),
    ("w-512", "width-sweep", "w-256", 20.0, True, 3e-3),
]


def sample_loss(run_id: str, step: float) -> float:
    """A smooth loss that a fork continues from where its parent was at the fork step, at its own rate."""
    _, _, parent, fork_step, _, lr = next(run for run in NEPTUNE3_RUNS if run[0] == run_id)
    start, since = (sample_loss(parent, fork_step), step - fork_step) if parent else (2.0, step)
    return 0.1 + (start - 0.1) * math.exp(-since * lr * 25)


def make_neptune3_samples() -> None:
    """samples/neptune/forks/: each run's own points only (the exporter fetches lineage_to_the_root=False);
    a fork starts after its fork step. Deterministic: made again, the files hold the same rows."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE.parent))
    from shared.neptune.archive import sanitized_names

    folder = NEPTUNE_SAMPLES / "forks" / sanitized_names(NEPTUNE3_PROJECT)[0]
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.mkdir(parents=True)
    started = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    depth: dict[str, int] = {}
    for number, (run_id, experiment, parent, fork_step, head, lr) in enumerate(NEPTUNE3_RUNS, start=1):
        depth[run_id] = depth[parent] + 1 if parent else 0
        created = started + timedelta(hours=number)
        first = math.floor(fork_step) + 1 if fork_step is not None else 0
        steps = [float(step) for step in range(first, STEPS)]
        if fork_step is not None and fork_step != math.floor(fork_step):
            steps.insert(0, fork_step + 0.25)  # a point between two whole steps, after the fork
        base = {"project_id": NEPTUNE3_PROJECT, "run_id": run_id}
        simple: dict = {
            "sys/id": f"SPDV-{number}",
            "sys/custom_run_id": run_id,
            "sys/name": run_id,
            "sys/experiment/name": experiment,
            "sys/experiment/is_head": head,
            "sys/creation_time": created,
            "sys/modification_time": created + timedelta(seconds=STEPS),
            "parameters/lr": lr,
        }
        if parent:
            simple |= {
                "sys/forking/parent": parent,
                "sys/forking/step": fork_step,
                "sys/forking/depth": depth[run_id],
            }
        kinds = {bool: ("bool", "bool_value"), int: ("int", "int_value"), float: ("float", "float_value"),
                 str: ("string", "string_value"), datetime: ("datetime", "datetime_value")}  # fmt: skip
        rows = []
        for path, value in sorted(simple.items()):
            kind, column = kinds[type(value)]
            rows.append(base | {"attribute_path": path, "attribute_type": kind, column: value})
        for step in steps:
            loss = sample_loss(run_id, step) + 0.02 * math.sin(step / 3)
            rows.append(
                base | {"attribute_path": "train/loss", "attribute_type": "float_series",
                        "step": Decimal(f"{step:.6f}"), "timestamp": created + timedelta(seconds=step),
                        "float_value": round(loss, 6)}
            )  # fmt: skip
        table = pa.Table.from_pylist(rows, schema=exporter_schema())
        pq.write_table(table, folder / f"{sanitized_names(run_id)[0]}_part_0.parquet", compression="snappy")
    print(f"wrote {len(NEPTUNE3_RUNS)} Neptune 3 sample runs to {folder.parent}")


def git_repository(folder: Path) -> None:
    """`folder` as a training project's clone: one commit and an origin, which the W&B runs record."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)

    (folder / "train.py").write_text("# the sample runs' training script (samples/make_samples.py)\n")
    git("init", "-q", "-b", "main")
    git("add", "train.py")
    git("-c", "user.name=Sample", "-c", "user.email=sample@example.org", "commit", "-q", "-m", "train")
    git("remote", "add", "origin", "https://github.com/graph-denoise-team/spectral-denoising.git")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        make_neptune_samples(Path(scratch))
    make_neptune3_samples()
    os.environ.update({"WANDB_SILENT": "true", "WANDB_MODE": "offline"})
    with tempfile.TemporaryDirectory() as scratch:
        git_repository(Path(scratch))
        os.chdir(scratch)
        os.environ["WANDB_DIR"] = scratch
        for index, (model, dataset) in enumerate((m, d) for m in MODELS for d in DATASETS):
            make_run("stage2c", model, dataset, k=[8, 16, 32][index % 3], seed=index % 2)
        make_run("stage3", "filter_bank", "pyg_enzymes", k=8, seed=0, fail=True)
        shutil.rmtree(SAMPLES, ignore_errors=True)
        for log in sorted(Path(scratch, "wandb").glob("offline-run-*/run-*.wandb")):
            target = SAMPLES / log.parent.name
            target.mkdir(parents=True)
            shutil.copy2(log, target / log.name)
    print(f"wrote {len(list(SAMPLES.glob('*/*.wandb')))} sample runs to {SAMPLES}")


if __name__ == "__main__":
    main()
