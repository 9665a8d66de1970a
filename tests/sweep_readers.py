"""Hostile sweep cases (issue 20). Readers see one export state (l), numbers kept exact (p), copies of one run in analysis (r, ids r-report-…)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl

from tests.sweep import AGGREGATE, ANALYZE, SAMPLE_PROJECT, WANDB_TOPK, Case, Outcome, copied_export, run
from tests.test_bad_input import isolated_env

GENERATION_KEY = "run_tools.generation"  # as shared.table.schema names it: the files are read as a user would
BEST = "xqlp9ego"  # the sample run with the lowest metric_test_mse
REWRITTEN = "being rewritten by an export"


def _file(export: Path, kind: str) -> Path:
    return export / f"{SAMPLE_PROJECT}_{kind}.parquet"


def _replace(path: Path, change=lambda frame: frame, generation: str | None = "a-newer-export") -> None:
    """`path` replaced as an export replaces it (new content, its generation, renamed into place); the
    generation kept when it is None (as a hand edit of the same export)."""
    kept = pl.read_parquet_metadata(path).get(GENERATION_KEY) if generation is None else generation
    temp = path.with_name(f".{path.name}.case.tmp")
    change(pl.read_parquet(path)).write_parquet(temp, metadata={GENERATION_KEY: kept} if kept else None)
    os.replace(temp, path)


def newer_history(export: Path) -> None:
    """An export paused between its renames: its history in place, the runs file still the old one."""
    _replace(_file(export, "history"), lambda frame: frame.with_columns(pl.col("value") * 10))


def newer_runs(export: Path) -> None:
    """Paused after the runs file's rename: the metadata still the old export's."""
    _replace(_file(export, "runs"))
    _replace(_file(export, "history"))


def older_version(export: Path) -> None:
    """Files as tools before generations wrote them: nothing to check, read as before."""
    for kind in ("runs", "history"):
        path = _file(export, kind)
        temp = path.with_name(f".{path.name}.case.tmp")
        pl.read_parquet(path).write_parquet(temp)
        os.replace(temp, path)
    metadata = export / f"{SAMPLE_PROJECT}_metadata.json"
    recorded = json.loads(metadata.read_text())
    del recorded["generation"]
    metadata.write_text(json.dumps(recorded))


def nothing_written(*names: str) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        for name in names:
            assert not (outcome.folder / name).exists(), name
        assert not list(outcome.folder.rglob(".*.tmp")), list(outcome.folder.rglob(".*.tmp"))

    return check


def script(name: str, argv: tuple[str, ...], setup: Callable[[Path], None]) -> Callable[[Path], Outcome]:
    def scenario(folder: Path) -> Outcome:
        setup(folder)
        return run(name, argv, folder, isolated_env(folder / "home"), timeout=90)

    return scenario


def aggregate_then(second: tuple[str, ...]) -> Callable[[Path], None]:
    """The sample export, aggregated with its history, then aggregated again by `second`."""

    def setup(folder: Path) -> None:
        copied_export(lambda export: None)(folder)
        env = isolated_env(folder / "home")
        first = run(
            AGGREGATE,
            ("export", "-o", "agg/u.parquet", "--include-history", "--protocol", "all"),
            folder,
            env,
        )
        assert first.code == 0, first.stderr
        again = run(AGGREGATE, ("export", "-o", "agg/u.parquet", "--protocol", "all", *second), folder, env)
        assert again.code == 0 and "left from an earlier aggregate" in again.stderr, again.stderr

    return setup


def report_has(*texts: str, absent: tuple[str, ...] = ()) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        page = (outcome.folder / "r.html").read_text()
        for text in texts:
            assert text in page, text
        for text in absent:
            assert text not in page, text

    return check


# ------------------------------------------------------------------ (p) numbers kept exact

BIG = 2**53 + 1


def big_integers(folder: Path, *, big: int = BIG) -> None:
    """Two runs files of one column: integers (one of them `big`) in one, floats in the other."""
    inputs = folder / "inputs"
    inputs.mkdir()
    base = {"entity": ["e", "e"], "project": ["p", "p"], "name": ["a", "b"], "state": ["finished"] * 2}
    pl.DataFrame({**base, "id": ["r1", "r2"], "metric_tokens": [big, 7]}).write_parquet(
        inputs / "x_runs.parquet"
    )
    pl.DataFrame({**base, "id": ["r3", "r4"], "metric_tokens": [0.5, 1.5]}).write_parquet(
        inputs / "y_runs.parquet"
    )


def warned_about(run: str | None) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        if run is None:
            assert "2^53" not in outcome.stderr, outcome.stderr
        else:
            assert f"e/p/{run} in inputs/x_runs.parquet: {BIG} -> 9007199254740992.0" in outcome.stderr

    return check


# ------------------------------------------------------------------ (r) copies: the report's curves


def stale_and_newest(*, newest_has_curve: bool) -> Callable[[Path], None]:
    """`stale/`: the sample export; `export/`: the same runs, the best one newer (a later heartbeat), its
    history without the best run's points unless `newest_has_curve`, then times 1000."""

    def setup(folder: Path) -> None:
        copied_export(lambda export: None)(folder)
        shutil.copytree(folder / "export", folder / "stale")
        newer = pl.col("id") == BEST
        _replace(
            _file(folder / "export", "runs"),
            lambda f: f.with_columns(
                pl.when(newer)
                .then(pl.col("heartbeat_at") + timedelta(hours=1))
                .otherwise(pl.col("heartbeat_at"))
            ),
            generation=None,
        )
        kept = (lambda f: f.with_columns(pl.col("value") * 1000)) if newest_has_curve else (
            lambda f: f.filter(pl.col("run_id") != BEST)
        )  # fmt: skip
        _replace(_file(folder / "export", "history"), kept, generation=None)

    return setup


REPORT = ("--report", "r.html", "--top", "1")

CASES: list[Case] = [
    # (l) a reader meets an export between its renames: read again, then one line, nothing written.
    Case("l-analyze-report-history-of-a-newer-export", "l",
         script(ANALYZE, ("export", "--report", "r.html"), copied_export(newer_history)), 1, REWRITTEN,
         check=nothing_written("r.html")),
    Case("l-aggregate-history-of-a-newer-export", "l",
         script(AGGREGATE, ("export", "-o", "agg/u.parquet", "--include-history"), copied_export(newer_history)),
         1, REWRITTEN, check=nothing_written("agg/u.parquet", "agg/u_history.parquet")),
    Case("l-query-topk-export-history-of-a-newer-export", "l",
         script(WANDB_TOPK, ("--export", "export", "--metric", "test/mse", "--aggregation", "min"),
                copied_export(newer_history)), 1, REWRITTEN),
    Case("l-analyze-metadata-of-an-older-export", "l",
         script(ANALYZE, ("export", "--top", "3"), copied_export(newer_runs)), 1, REWRITTEN),
    # Without --include-history the history is not read: its generation does not matter.
    Case("l-aggregate-without-history-ignores-the-history", "l",
         script(AGGREGATE, ("export", "-o", "agg/u.parquet", "--protocol", "all"), copied_export(newer_history)), 0),
    # Files written before generations: read as before (no check possible).
    Case("l-older-version-files-still-read-by-the-report", "l",
         script(ANALYZE, ("export", *REPORT), copied_export(older_version)), 0, check=report_has("<svg")),
    Case("l-older-version-files-still-aggregated-with-history", "l",
         script(AGGREGATE, ("export", "-o", "agg/u.parquet", "--include-history", "--protocol", "all"),
                copied_export(older_version)), 0, "history rows to agg/u_history.parquet"),
    # An aggregate without history beside an earlier aggregate's history: that history is not its own.
    Case("l-report-of-an-aggregate-ignores-an-earlier-aggregates-history", "l",
         script(ANALYZE, ("agg/u.parquet", *REPORT), aggregate_then(())), 0,
         check=report_has("No learning curves: the input has no history")),
    # (f) found on the way: a damaged history file was a report's "error run-tools did not expect".
    Case("f-report-history-cut-short", "f",
         script(ANALYZE, ("export", "--report", "r.html"),
                copied_export(lambda export: os.truncate(_file(export, "history"), 2000))), 2,
         "cannot read the history", check=nothing_written("r.html")),
    Case("f-aggregate-history-cut-short", "f",
         script(AGGREGATE, ("export", "-o", "agg/u.parquet", "--include-history"),
                copied_export(lambda export: os.truncate(_file(export, "history"), 2000))), 2,
         "as parquet", check=nothing_written("agg/u.parquet", "agg/u_history.parquet")),
    # (p) an integer a float cannot hold, met by floats in another file.
    Case("p-aggregate-integer-beyond-2-53-meets-floats", "p",
         script(AGGREGATE, ("inputs", "-o", "u.parquet", "--protocol", "all", "--no-enrich"), big_integers), 0,
         "integers beyond 2^53", check=warned_about("r1")),
    Case("p-analyze-integer-beyond-2-53-meets-floats", "p",
         script(ANALYZE, ("inputs", "--metric", "tokens"), big_integers), 0, "column metric_tokens",
         check=warned_about("r1")),
    Case("p-aggregate-integers-up-to-2-53-say-nothing", "p",
         script(AGGREGATE, ("inputs", "-o", "u.parquet", "--protocol", "all"),
                lambda folder: big_integers(folder, big=2**53)), 0, check=warned_about(None)),
    # (r) the report's curve of a run is from the export its table row is from (the newest copy).
    Case("r-report-curve-not-from-a-stale-copy", "r",
         script(ANALYZE, ("stale", "export", *REPORT), stale_and_newest(newest_has_curve=False)), 0,
         check=report_has("No learning curves: the history holds no")),
    Case("r-report-curve-from-the-newest-copy-listed-last", "r",
         script(ANALYZE, ("stale", "export", *REPORT), stale_and_newest(newest_has_curve=True)), 0,
         check=report_has("<svg", absent=("holds no",))),
]  # fmt: skip
