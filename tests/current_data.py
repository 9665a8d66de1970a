"""Generated exports shaped like the seed's "Current Data", written by the project's own runs writer."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from shared.table.rows import runs_table
from shared.table.schema import RunRecord

MODEL_TYPES = (
    "filter_bank",
    "self_attention",
    "linear_pe",
    "spectral_linear",
    "gnn_all",
    "gnn_qk",
    "gnn_v",
    "digress_default",
    "digress_transformer",
    "digress_transformer_gnn_qk",
    "digress_transformer_gnn_v",
    "digress_spectral",
)
GRAPH_TYPES = (
    "ring_of_cliques",
    "pyg_enzymes",
    "pyg_proteins",
    "sbm",
    "tree",
    "regular",
    "erdos_renyi",
    "planar",
    "grid",
    "ego",
)
KS = (8, 16, 32, 50)
STAGES = ("stage1", "stage2", "stage3")
MODEL_SCALE = {m: 0.1 + 0.25 * i for i, m in enumerate(MODEL_TYPES)}
GRAPH_SCALE = {g: 1.0 + 0.3 * i for i, g in enumerate(GRAPH_TYPES)}
START = datetime(2026, 1, 10, tzinfo=UTC)


@dataclass(frozen=True)
class Expected:
    """What a test should find for one run, computed here in plain Python."""

    id: str
    name: str
    stage: str
    model: str
    graph: str
    k: int
    seed: int
    lr: float
    state: str
    mse: float | None  # None: not logged; NaN: logged as NaN
    accuracy: float | None


def make_runs(
    seeds: tuple[int, ...] = (0,), *, salt: str = "", project: str = "spectral_denoising"
) -> list[RunRecord]:
    """12 model types x 10 graph types x 4 k x `seeds`, stages stage1…stage3 in turn; a few failed or NaN runs."""
    records = []
    index = 0
    for model in MODEL_TYPES:
        for graph in GRAPH_TYPES:
            for k in KS:
                for seed in seeds:
                    rng = random.Random(f"{salt}{model}{graph}{k}{seed}")
                    stage = STAGES[index % 3]
                    lr = (1e-3, 3e-4)[index % 2]
                    name = f"{stage}_{model}_{graph}_k{k}_lr{lr:.0e}_s{seed}".replace("e-0", "e-")
                    mse = (
                        MODEL_SCALE[model]
                        * GRAPH_SCALE[graph]
                        * (1 + 0.1 * math.log2(k / 8))
                        * rng.uniform(0.9, 1.1)
                    )
                    summary: dict[str, object] = {
                        "test/mse": mse,
                        "test/accuracy": max(0.0, 1 - mse / 8),
                        "_runtime": 60,
                    }
                    state = "finished"
                    if index % 37 == 5:
                        summary["test/mse"] = float("nan")
                    if index % 41 == 7:
                        del summary["test/mse"]
                        state = "failed"
                    records.append(
                        RunRecord(
                            id=f"{salt}r{index:05d}",
                            entity="graph_denoise_team",
                            project=project,
                            name=name,
                            state=state,
                            created_at=START + timedelta(minutes=index),
                            heartbeat_at=START + timedelta(minutes=index, seconds=30),
                            runtime_s=60.0,
                            tags=[stage, model],
                            group=stage,
                            job_type="train",
                            config={
                                "model": {"type": model, "k": k},
                                "data": {"graph_type": graph, "noise_eps": 0.1},
                                "optimizer": {"lr": lr, "weight_decay": 1e-4},
                                "seed": seed,
                            },
                            summary=summary,
                        )
                    )
                    index += 1
    return records


def expected(record: RunRecord) -> Expected:
    """The run's factors and metrics, read back from the record itself (not from any parquet)."""
    config = record.config
    return Expected(
        id=record.id,
        name=record.name or "",
        stage=(record.name or "").split("_")[0],
        model=config["model"]["type"],
        graph=config["data"]["graph_type"],
        k=config["model"]["k"],
        seed=config["seed"],
        lr=config["optimizer"]["lr"],
        state=record.state or "",
        mse=record.summary.get("test/mse"),  # type: ignore[arg-type]
        accuracy=record.summary.get("test/accuracy"),  # type: ignore[arg-type]
    )


def write_export(folder: Path, records: list[RunRecord], *, exported_at: datetime | None = None) -> Path:
    """`folder/{entity}_{project}_runs.parquet` (+ metadata with `exported_at`) from `records`."""
    folder.mkdir(parents=True, exist_ok=True)
    first = records[0]
    stem = f"{first.entity}_{first.project}"
    table, _ = runs_table(records)
    path = folder / f"{stem}_runs.parquet"
    pq.write_table(table, path)
    stamp = (exported_at or datetime.now(UTC)).isoformat(timespec="seconds")
    (folder / f"{stem}_metadata.json").write_text(json.dumps({"exported_at": stamp}))
    return path


def has_value(value: float | None) -> bool:
    """A metric value that counts: present and not NaN."""
    return value is not None and not math.isnan(value)


def load_script(name: str, folder: str = "wandb-tools"):
    """A script of wandb-tools/ (or `folder`) as a module, to call its main in-process. Not a package import
    (the folder name has a dash); the module is named after folder and script, as both folders have an
    export_runs.py and a query_topk.py."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{folder.replace('-', '_')}_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
