#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["wandb>=0.31"]
# ///
"""Make the bundled sample runs: small offline runs written by the real wandb client.

Run from the repository root: `uv run samples/make_samples.py`. Only the `run-*.wandb` logs are kept,
under samples/wandb/offline-run-*/; they are what the README quick start exports.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "wandb"
MODELS = {"filter_bank": 0.10, "self_attention": 0.30, "linear_pe": 0.60, "digress_default": 1.20}
DATASETS = {"ring_of_cliques": 1.0, "sbm": 1.6, "pyg_enzymes": 2.4}
STEPS = 60


def make_run(stage: str, model: str, dataset: str, k: int, seed: int, *, fail: bool = False) -> None:
    import wandb

    rng = random.Random(f"{stage}{model}{dataset}{k}{seed}")
    lr = rng.choice([1e-3, 3e-4])
    name = f"{stage}_{model}_{dataset}_k{k}_lr{lr:.0e}_s{seed}".replace("e-0", "e-")
    final_mse = MODELS[model] * DATASETS[dataset] * (1 + 0.1 * math.log2(k / 8)) * rng.uniform(0.9, 1.1)
    run = wandb.init(
        mode="offline",
        entity="graph_denoise_team",
        project="spectral_denoising",
        name=name,
        group=stage,
        job_type="train",
        tags=[stage, model],
        config={
            "model": {"type": model, "k": k},
            "data": {"graph_type": dataset, "noise_eps": 0.1},
            "optimizer": {"lr": lr, "weight_decay": 1e-4},
            "seed": seed,
        },
    )
    for step in range(STEPS):
        progress = (step + 1) / STEPS
        mse = final_mse * (1 + 4 * (1 - progress) ** 2) * rng.uniform(0.97, 1.03)
        run.log({"train/loss": mse * 1.1, "test/mse": mse, "test/accuracy": max(0.0, 1 - mse / 4)})
        if fail and step == STEPS // 2:
            run.log({"train/loss": float("nan")})
            break
    run.summary["best/test_mse"] = final_mse
    run.finish(exit_code=1 if fail else 0)


def main() -> None:
    os.environ.update({"WANDB_SILENT": "true", "WANDB_MODE": "offline"})
    with tempfile.TemporaryDirectory() as scratch:
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
