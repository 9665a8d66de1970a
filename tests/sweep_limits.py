"""Hostile sweep cases (issue 20). Resource limits (n) and signals at shutdown (o)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl

from tests.export_checks import cron_dataset, new_run, utc_now
from tests.sweep import (
    AGGREGATE,
    ALPHA,
    ANALYZE,
    EXPORT,
    INPUTS,
    LIST,
    NEPTUNE_EXPORT,
    SAMPLE_PROJECT,
    WANDB_TOPK,
    Case,
    Outcome,
    alpha,
    api_export,
    copied_export,
    finish,
    history_requested,
    hold_history_files,
    listed_runs,
    runs_frame,
    script_run,
    server_env,
    start,
)
from tests.test_bad_input import ROOT
from tests.wandb_standin import HookResult, StandinDataset, StandinServer

# `ulimit -v 1500000` (KiB) and `ulimit -n 32`, the issue's limits; under the first, polars' and pyarrow's
# allocators aborted the process (exit 134) before they were sized to it.
ADDRESS_LIMIT = "as=1500000"
FILES_LIMIT = "nofile=32"
TOO_LITTLE = "as=300000"  # not even the libraries load: one error line
CLIENT_CANNOT_START = "as=700000"  # enough for the tools, not for the wandb client's service
NEPTUNE_ARCHIVE = ROOT / "samples" / "neptune" / "archive"
BIG_RUNS = 200_000
MORE_RUNS = 150
FOLDERS = 1000


# (n) resource limits -------------------------------------------------------------------------------


def unchanged(folder: Path) -> None:
    pass


def many_runs(export: Path) -> None:
    """The sample export's runs file grown to BIG_RUNS rows (distinct ids, values spread)."""
    runs_path = export / f"{SAMPLE_PROJECT}_runs.parquet"
    runs = pl.read_parquet(runs_path)
    index = pl.int_range(BIG_RUNS)
    big = runs.sample(BIG_RUNS, with_replacement=True, seed=1).with_columns(id=pl.format("r{}", index))
    spread = [
        pl.col(name) * (1 + index / BIG_RUNS) for name, kind in big.schema.items() if kind == pl.Float64
    ]
    big.with_columns(spread).write_parquet(runs_path)
    metadata_path = export / f"{SAMPLE_PROJECT}_metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata |= {"run_count": BIG_RUNS, "runs_reported": BIG_RUNS, "runs_exported": BIG_RUNS}
    metadata_path.write_text(json.dumps(metadata))


def thousand_copies(folder: Path) -> None:
    """FOLDERS copies of the sample export's runs and metadata, each in a folder of its own."""
    source = INPUTS["export"]
    files = [path for path in source.iterdir() if path.name.endswith(("_runs.parquet", "_metadata.json"))]
    for index in range(FOLDERS):
        target = folder / "exports" / f"e{index:04d}"
        target.mkdir(parents=True)
        for path in files:
            (target / path.name).write_bytes(path.read_bytes())


def quiet(outcome: Outcome) -> None:
    assert "Warning" not in outcome.stderr and "deadlock" not in outcome.stderr, outcome.stderr


def shows_top_runs(outcome: Outcome) -> None:
    assert "test_mse" in outcome.stdout, outcome.stdout


def wrote_aggregate(outcome: Outcome) -> None:
    assert pl.read_parquet(outcome.folder / "all.parquet").height == 13
    assert pl.read_parquet(outcome.folder / "all_history.parquet").height > 0


def wrote_report(runs: int) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert f"({runs} runs," in outcome.stderr and (outcome.folder / "report.html").stat().st_size > 0

    return check


def neptune_exported(outcome: Outcome) -> None:
    (runs_file,) = (outcome.folder / "out").glob("*_runs.parquet")
    assert pl.read_parquet(runs_file).height == 13


def alpha_exported(outcome: Outcome) -> None:
    assert runs_frame(outcome, "alpha").height == 12


def more_history_runs(dataset: StandinDataset, server: StandinServer) -> None:
    """alpha with MORE_RUNS more finished runs with history: more downloads than --workers' default."""
    created = utc_now() - timedelta(days=4)
    alpha(dataset).runs.extend(new_run(f"more{index:04d}", created, steps=50) for index in range(MORE_RUNS))


def all_alpha_exported(outcome: Outcome) -> None:
    assert runs_frame(outcome, "alpha").height == 12 + MORE_RUNS


def one_error_line(outcome: Outcome) -> None:
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Exception ignored" not in outcome.stderr, outcome.stderr


# (o) signals at shutdown ---------------------------------------------------------------------------


def signal_storm(signum: int, limit: str | None = None) -> Callable[[Path], Outcome]:
    """`signum` while history downloads run in worker threads (each answered 2 s late), then again every
    5 ms until the process ends: the unwinding and the joins of the worker threads see them all. Under an
    address-space `limit` the work runs in a child of the process signalled, which passes them on."""

    def scenario(folder: Path) -> Outcome:
        dataset = cron_dataset()
        with StandinServer(dataset) as server:
            requested = hold_history_files(server, HookResult(delay_s=2.0))
            began = time.monotonic()
            child = start(EXPORT, list(ALPHA), folder, server_env(folder, server), limit)
            history_requested(requested, child)
            time.sleep(0.3)
            sent = 0
            while child.poll() is None and time.monotonic() - began < 60:
                try:
                    child.send_signal(signum)
                except ProcessLookupError:
                    break
                sent += 1
                time.sleep(0.005)
            outcome = finish(child, folder, 60, began)
        if outcome.code == -signum:  # a signal once the work had ended: killed by it, which a shell (and
            outcome.code = 128 + signum  # cron) reports as 128 + signum, the status an interruption has
        outcome.server_runs = listed_runs(dataset)
        outcome.extra["sent"] = sent
        return outcome

    return scenario


def storm_ends_at_the_error_line(name: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert outcome.extra["sent"] > 1, "only one signal was sent"
        lines = outcome.stderr.strip().splitlines()
        assert lines[-1] == f"error: interrupted ({name})", outcome.stderr
        assert sum(line.startswith("error:") for line in lines) == 1, outcome.stderr
        assert "Exception ignored" not in outcome.stderr and "KeyboardInterrupt" not in outcome.stderr
        assert not list((outcome.folder / "out").glob("*_runs.parquet")), "an interrupted export wrote runs"

    return check


CASES: list[Case] = [
    Case("n-analyze-top-under-ulimit-v", "n",
         script_run(ANALYZE, ("export", "--top", "5", "--metric", "test/mse"), copied_export(unchanged),
                    limit=ADDRESS_LIMIT), 0, check=shows_top_runs),
    Case("n-aggregate-history-under-ulimit-v", "n",
         script_run(AGGREGATE, ("export", "--include-history", "-o", "all.parquet"), copied_export(unchanged),
                    limit=ADDRESS_LIMIT), 0, check=wrote_aggregate),
    # 200k runs: an abort in the allocator, or a hang with every thread waiting, before the sizing.
    Case("n-report-of-200k-runs-under-ulimit-v", "n",
         script_run(ANALYZE, ("export", "--report", "report.html", "--metric", "test/mse"),
                    copied_export(many_runs), limit=ADDRESS_LIMIT, timeout=120), 0,
         check=wrote_report(BIG_RUNS)),
    # polars started 512 threads to read 1,000 folders (and warned of a deadlock): an abort at 1.5 GB.
    Case("n-analyze-1000-export-folders-under-ulimit-v", "n",
         script_run(ANALYZE, ("exports/*/*_runs.parquet", "--top", "3", "--metric", "test/mse"), thousand_copies,
                    limit=ADDRESS_LIMIT, timeout=120), 0, check=quiet),
    # Too little for 200k runs: polars' failed allocation aborted the process (exit 134, not a word).
    Case("n-report-of-200k-runs-with-too-little-memory", "n",
         script_run(ANALYZE, ("export", "--report", "report.html", "--metric", "test/mse"),
                    copied_export(many_runs), limit="as=600000", timeout=120), 1, "out of memory",
         check=one_error_line),
    Case("n-neptune-archive-export-under-ulimit-v", "n",
         script_run(NEPTUNE_EXPORT, ("--source", str(NEPTUNE_ARCHIVE), "-o", "out", "--include-history"),
                    limit=ADDRESS_LIMIT), 0, check=neptune_exported),
    Case("n-api-export-with-history-under-ulimit-v", "n", api_export(ALPHA, limit=ADDRESS_LIMIT), 0,
         check=alpha_exported),
    Case("n-api-export-with-history-under-ulimit-n", "n", api_export(ALPHA, limit=FILES_LIMIT), 0,
         check=alpha_exported),
    # 32 downloads at once with 32 files: each failed to connect (EMFILE), retried for 300 s, then left out.
    Case("n-api-export-of-162-histories-under-ulimit-n", "n",
         api_export(ALPHA, more_history_runs, limit=FILES_LIMIT, timeout=120), 0, check=all_alpha_exported),
    # Too little memory for the libraries to load: one line saying so, no traceback after it (the exit
    # guard's thread could not start either).
    Case("n-query-with-too-little-memory", "n",
         script_run(WANDB_TOPK, ("--export", "export", "--metric", "test/mse", "-k", "3"),
                    copied_export(unchanged), limit=TOO_LITTLE), 1, "out of memory", check=one_error_line),
    # wandb-core (Go) cannot start its threads under 700 MB: it was "W&B rejected the API key", exit 2.
    Case("n-api-list-when-wandb-core-cannot-start", "n",
         api_export(("-e", "cron"), script=LIST, limit=CLIENT_CANNOT_START), 1, "service stopped"),
    # Below the tools' floor of open files the wandb client waited forever for its event loop: refused.
    Case("n-api-query-under-ulimit-n-12", "n", api_export(("cron/alpha", "--metric", "loss"), script=WANDB_TOPK,
         limit="nofile=12", timeout=60), 1, "too many open files: the limit is 12", check=one_error_line),
    Case("o-sigint-storm-during-history-downloads", "o", signal_storm(signal.SIGINT), 130,
         "interrupted (SIGINT)", check=storm_ends_at_the_error_line("SIGINT")),
    Case("o-sigint-storm-under-ulimit-v", "o", signal_storm(signal.SIGINT, ADDRESS_LIMIT), 130,
         "interrupted (SIGINT)", check=storm_ends_at_the_error_line("SIGINT")),
    Case("o-sigterm-storm-during-history-downloads", "o", signal_storm(signal.SIGTERM), 143,
         "interrupted (SIGTERM)", check=storm_ends_at_the_error_line("SIGTERM")),
]  # fmt: skip
