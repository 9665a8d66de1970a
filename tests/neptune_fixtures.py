"""Neptune test data: run specs, neptune-exporter archives, real offline runs and a stand-in live client."""

from __future__ import annotations

import hashlib
import math
import re
import types
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

PROJECT = "team/sae-sweep"
NAN, INF = math.nan, math.inf
CREATED = datetime(2025, 5, 1, tzinfo=UTC)  # every run's sys/creation_time; point timestamps count from it


@dataclass
class Spec:
    """One run as logged: parameters, series (step may be None = unnumbered), single numbers, sys fields."""

    name: str
    params: dict[str, Any]
    series: dict[str, list[tuple[float | None, float]]]
    numbers: dict[str, float] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    description: str = ""
    failed: bool = False
    group_tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)  # other simple attributes: str, bool, datetime
    strings: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # string series: (step, text)
    images: tuple[str, ...] = ()  # image series (FileSeries) a server holds: their paths (live stand-in only)


def steps(*values: float, start: int = 0, every: int = 10) -> list[tuple[float | None, float]]:
    return [(float(start + i * every), v) for i, v in enumerate(values)]


SPECS = [
    Spec(
        "alpha",
        {"lr": 0.01, "width": 1024, "optimizer": "adam"},
        {
            "train/loss": steps(1.0, 0.6, 0.41, 0.40),
            "metrics/L0": steps(80.0, 60.0, 45.0, 42.0),
            "eval/accuracy": [(None, 0.5), (None, 0.7), (None, 0.81)],
        },
        {"metrics/L1": 0.2},
        ("baseline",),
    ),
    Spec(
        "beta",
        {"lr": 0.03, "width": 2048, "optimizer": "adam"},
        {
            "train/loss": steps(0.9, 0.3, 0.2, 0.10),
            "metrics/L0": steps(90.0, 85.0, 80.0, 75.0),
            "eval/accuracy": steps(0.6, 0.9, 0.88),
        },
        {"metrics/L1": 0.5},
    ),
    Spec(
        "gamma",  # never logged L1
        {"lr": 0.02, "width": 1024, "optimizer": "sgd"},
        {
            "train/loss": steps(0.8, 0.35, 0.25),
            "metrics/L0": steps(40.0, 35.0, 31.0),
            "eval/accuracy": steps(0.6, 0.75),
        },
    ),
    Spec(
        "delta",  # a NaN point in the middle and an inf at the end of its loss
        {"lr": 0.005, "width": 4096, "optimizer": "adam"},
        {
            "train/loss": steps(0.7, NAN, 0.32, INF),
            "metrics/L0": steps(55.0, 50.0, 48.0),
            "eval/accuracy": steps(0.5, 0.85),
        },
        {"metrics/L1": 0.15},
    ),
    Spec(
        "epsilon",  # ties with alpha on the last loss value
        {"lr": 0.01, "width": 512, "optimizer": "adam"},
        {
            "train/loss": steps(1.2, 0.7, 0.40),
            "metrics/L0": steps(35.0, 33.0),
            "eval/accuracy": steps(0.4, 0.82, 0.79),
        },
        {"metrics/L1": 0.05},
    ),
    Spec(
        "zeta",  # diverged: no finite loss at all
        {"lr": 0.3, "width": 1024, "optimizer": "sgd"},
        {"train/loss": steps(NAN, INF, NAN), "metrics/L0": steps(20.0), "eval/accuracy": steps(0.1)},
        {"metrics/L1": 0.3},
    ),
    Spec(
        "eta",
        {"lr": 0.001, "width": 2048, "optimizer": "adamw"},
        {
            "train/loss": steps(0.95, 0.5, 0.45, 0.44, 0.43, start=5),
            "metrics/L0": steps(70.0, 58.0, 52.0, 49.0, 47.0, start=5),
            "eval/accuracy": steps(0.7, 0.8, 0.83, 0.84, 0.86, start=5),
        },
        {"metrics/L1": 0.25},
    ),
]
BY_NAME = {spec.name: spec for spec in SPECS}


def numbered(points: list[tuple[float | None, float]]) -> list[tuple[float, float]]:
    """Unnumbered points continue from the last step (+1, 0 first), as the offline log replay numbers them."""
    out, last = [], None
    for step, value in points:
        step = (last + 1 if last is not None else 0.0) if step is None else step
        out.append((step, value))
        last = step
    return out


def flat_paths(prefix: str, tree: dict[str, Any]) -> dict[str, Any]:
    """A nested dict as Neptune attribute paths: {"model": {"k": 3}} under `parameters` → parameters/model/k."""
    paths: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}"
        paths |= flat_paths(path, value) if isinstance(value, dict) else {path: value}
    return paths


def point_time(step: float) -> datetime:
    """The timestamp the archive and the stand-in server give the point at `step`."""
    return CREATED + timedelta(milliseconds=step)


# ------------------------------------------------------------------ neptune-exporter archives

EXPORTER_SCHEMA = pa.schema(  # neptune-exporter src/neptune_exporter/model.py::SCHEMA
    [
        ("project_id", pa.string()),
        ("run_id", pa.string()),
        ("attribute_path", pa.string()),
        ("attribute_type", pa.string()),
        ("step", pa.decimal128(18, 6)),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("int_value", pa.int64()),
        ("float_value", pa.float64()),
        ("string_value", pa.string()),
        ("bool_value", pa.bool_()),
        ("datetime_value", pa.timestamp("ms", tz="UTC")),
        ("string_set_value", pa.list_(pa.string())),
        ("file_value", pa.struct([("path", pa.string())])),
        ("histogram_value", pa.struct([("type", pa.string()), ("edges", pa.list_(pa.float64())), ("values", pa.list_(pa.float64()))])),
    ]
)  # fmt: skip
_VALUE_COLUMNS = {  # Python type → (attribute_type, value column); bool before int: bool is an int
    bool: ("bool", "bool_value"),
    int: ("int", "int_value"),
    float: ("float", "float_value"),
    str: ("string", "string_value"),
    datetime: ("datetime", "datetime_value"),
    tuple: ("string_set", "string_set_value"),
    list: ("string_set", "string_set_value"),
}


def exporter_name(text: str) -> str:
    """neptune-exporter's sanitize_path_part: non [alnum _ -] → `_`, plus a blake2b-8 digest suffix."""
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in text)
    return f"{safe}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


def attribute_row(path: str, value: Any) -> dict[str, Any]:
    """One simple attribute as the exporter writes it: its type and the matching value column."""
    kind, column = _VALUE_COLUMNS[type(value)]
    return {
        "attribute_path": path,
        "attribute_type": kind,
        column: list(value) if kind == "string_set" else value,
    }


def sys_attributes(run_id: str, spec: Spec, index: int) -> dict[str, Any]:
    """The sys/* attributes neptune-exporter writes for a run (it skips sys/state, a run_state)."""
    last_step = max((step for points in spec.series.values() for step, _ in numbered(points)), default=0.0)
    return {
        "sys/id": run_id,
        "sys/name": spec.name,
        "sys/failed": spec.failed,
        "sys/tags": spec.tags,
        "sys/group_tags": spec.group_tags,
        "sys/description": spec.description,
        "sys/owner": "ada",
        "sys/creation_time": CREATED + timedelta(hours=index),
        "sys/modification_time": point_time(last_step) + timedelta(hours=index, minutes=5),
        "sys/ping_time": point_time(last_step) + timedelta(hours=index, minutes=1),
        "sys/running_time": 240.0 + index,
    }


def exporter_rows(project: str, run_id: str, spec: Spec, index: int = 0) -> list[dict[str, Any]]:
    base = {"project_id": project, "run_id": run_id}
    simple = sys_attributes(run_id, spec, index) | flat_paths("parameters", spec.params)
    simple |= spec.numbers | spec.attributes
    rows = [base | attribute_row(path, value) for path, value in simple.items()]
    for path, points in spec.series.items():
        for step, value in numbered(points):
            rows.append(
                base | {"attribute_path": path, "attribute_type": "float_series", "step": pa.scalar(step).cast(pa.decimal128(18, 6)).as_py(),
                        "timestamp": point_time(step), "float_value": value}
            )  # fmt: skip
    for path, texts in spec.strings.items():
        for step, text in texts:
            rows.append(
                base | {"attribute_path": path, "attribute_type": "string_series", "step": pa.scalar(step).cast(pa.decimal128(18, 6)).as_py(),
                        "timestamp": point_time(step), "string_value": text}
            )  # fmt: skip
    return rows


def write_archive(root: Path, project: str = PROJECT, *, one_file: bool = False, specs=SPECS) -> Path:
    """A neptune-exporter data folder: `<root>/<sanitized project>/<sanitized run>_part_0.parquet`."""
    folder = root / exporter_name(project)
    folder.mkdir(parents=True)
    tables = {}
    for index, spec in enumerate(specs):
        run_id = f"TEST-{index + 1}"
        tables[run_id] = pa.Table.from_pylist(
            exporter_rows(project, run_id, spec, index), schema=EXPORTER_SCHEMA
        )
    if one_file:  # an early exporter layout: part_N.parquet with many runs each
        pq.write_table(pa.concat_tables(tables.values()), folder / "part_0.parquet")
    else:
        for run_id, table in tables.items():
            pq.write_table(table, folder / f"{exporter_name(run_id)}_part_0.parquet", compression="snappy")
    (folder / "TEST-99_part_0.parquet.tmp").write_bytes(b"unfinished part")  # an export still running
    return root


def write_as_the_exporter(
    root: Path, project: str = PROJECT, *, specs=SPECS, parts: int = 1, unfinished: tuple[str, ...] = ()
) -> Path:
    """An archive written the way neptune-exporter's ParquetWriter writes one: a snappy ParquetWriter per
    part, one `write_batch` (a row group) per batch (the simple attributes, then each series), NaN series
    values stored as null (its pandas conversion; ±inf stay), batches spread over `parts` parts, and the
    parts renamed from `.tmp` last first, part 0 last. Runs named in `unfinished` stop before that
    rename: their other parts are final, part 0 is still `.tmp`."""
    folder = root / exporter_name(project)
    folder.mkdir(parents=True)
    for index, spec in enumerate(specs):
        run_id = f"TEST-{index + 1}"
        rows = exporter_rows(project, run_id, spec, index)
        for row in rows:
            if row["attribute_type"] == "float_series" and math.isnan(row["float_value"]):
                row["float_value"] = None
        batches = [[row for row in rows if row["attribute_type"] != "float_series"]]
        batches += [[row for row in rows if row["attribute_path"] == path] for path in spec.series]
        temp = [folder / f"{exporter_name(run_id)}_part_{n}.parquet.tmp" for n in range(parts)]
        writers = [pq.ParquetWriter(path, EXPORTER_SCHEMA, compression="snappy") for path in temp]
        for number, batch in enumerate(batches):
            writers[min(number, parts - 1)].write_batch(
                pa.RecordBatch.from_pylist(batch, schema=EXPORTER_SCHEMA)
            )
        for writer in writers:
            writer.close()
        for path in reversed(temp if spec.name not in unfinished else temp[1:]):
            path.rename(path.with_suffix(""))
    return root


BAD_PARTS = ("foreign", "mistyped", "not-parquet")  # files that are not neptune-exporter parts


def bad_part_error(path: Path, kind: str) -> str:
    """The error (a regex) the readers must give for the BAD_PARTS file at `path`."""
    if kind == "not-parquet":
        return f"cannot read {re.escape(str(path))} as parquet: parquet: File out of specification"
    problem = {
        "foreign": "has no project_id, run_id, attribute_path, attribute_type, step columns",
        "mistyped": r"has columns of other types than the exporter's: step is Float64, not Decimal",
    }[kind]
    return (
        f"{re.escape(str(path.parent))} is not a neptune-exporter archive: {re.escape(path.name)} {problem}"
    )


def write_bad_part(path: Path, kind: str) -> Path:
    """A `.parquet` file of a BAD_PARTS kind: another tool's table, plain text, or a part whose step
    column is a float (not the exporter's decimal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "foreign":
        pq.write_table(pa.table({"x": [1, 2], "y": ["a", "b"]}), path)
    elif kind == "not-parquet":
        path.write_text("hi\n")
    else:
        table = pa.Table.from_pylist(exporter_rows(PROJECT, "TEST-9", SPECS[0]), schema=EXPORTER_SCHEMA)
        step = table.schema.get_field_index("step")
        pq.write_table(table.set_column(step, "step", table["step"].cast(pa.float64())), path)
    return path


# ------------------------------------------------------------------ real offline runs

QUIET = {
    "capture_hardware_metrics": False, "capture_stdout": False, "capture_stderr": False,
    "capture_traceback": False, "source_files": [], "git_ref": False,
}  # fmt: skip


def log_run(neptune, spec: Spec, project: str = PROJECT, **options) -> None:
    run = neptune.init_run(
        project=project, mode="offline", name=spec.name, tags=list(spec.tags), description=spec.description,
        **options,
    )  # fmt: skip
    run["parameters"] = spec.params
    for path, value in {**spec.numbers, **spec.attributes}.items():
        run[path] = value
    if spec.group_tags:
        run["sys/group_tags"].add(list(spec.group_tags))
    if spec.failed:
        run["sys/failed"] = True
    for path, points in spec.series.items():
        for step, value in points:
            run[path].append(value, step=step)  # the client drops NaN/inf with a warning
    for path, texts in spec.strings.items():
        for step, text in texts:
            run[path].append(text, step=step)
    run.stop()


def write_offline_project(work: Path, specs=SPECS) -> Path:
    """`work/.neptune/offline` with one real offline run per spec, the first with the client's defaults
    (hardware monitoring, stdout capture, source files), the others quiet."""
    import neptune

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("NEPTUNE_MODE", "offline")
        patch.setenv("NEPTUNE_DATA_DIRECTORY", str(work / ".neptune"))
        patch.delenv("NEPTUNE_API_TOKEN", raising=False)
        patch.delenv("NEPTUNE_PROJECT", raising=False)
        for index, spec in enumerate(specs):
            log_run(neptune, spec, **({} if index == 0 else QUIET))
    assert len(list((work / ".neptune" / "offline").iterdir())) == len(specs)
    return work


# ------------------------------------------------------------------ a stand-in for the live client


@dataclass
class Calls:
    tables: int = 0
    opened: list[str] = field(default_factory=list)
    fetched: list[tuple[str, str]] = field(default_factory=list)
    stopped: int = 0
    fail_on: str | None = None
    reject_token: bool = False  # init_project raises the client's invalid-token error


def server_view(spec: Spec) -> dict[str, list[tuple[float, float]]]:
    """What a server holds: the client never sent NaN/inf points."""
    series = {k: [(s, v) for s, v in numbered(p) if math.isfinite(v)] for k, p in spec.series.items()}
    return {k: v for k, v in series.items() if v}


class StandInClient(types.ModuleType):
    """The part of the neptune 1.x client the live source uses: init_project/init_run in read-only mode."""

    def __init__(self, calls: Calls, states: dict[str, str], specs: list[Spec] = SPECS) -> None:
        import neptune.exceptions

        super().__init__("neptune")
        self.calls, self.states, self.specs = calls, states, specs
        self.exceptions = neptune.exceptions  # the real client's error types

    def init_project(self, *, project, api_token, mode):
        if self.calls.reject_token:
            raise self.exceptions.NeptuneInvalidApiTokenException()
        assert (project, api_token, mode) == (PROJECT, "token-for-tests", "read-only")
        return StandInProject(self.calls, self.states, self.specs)

    def init_run(self, *, project, api_token, with_id, mode):
        assert mode == "read-only" and api_token == "token-for-tests"
        self.calls.opened.append(with_id)
        return StandInRun(self.calls, with_id, self.specs[int(with_id.split("-")[1]) - 1])


class StandInProject:
    def __init__(self, calls: Calls, states: dict[str, str], specs: list[Spec]) -> None:
        self.calls, self.states, self.specs = calls, states, specs

    def fetch_runs_table(self, **kwargs):
        """The runs table as the client gives it: string sets joined by commas, datetimes as Timestamps,
        each series' last value (a string series' last text)."""
        self.calls.tables += 1
        rows = []
        for index, spec in enumerate(self.specs):
            run_id = f"TEST-{index + 1}"
            row = {
                k: ",".join(v) if isinstance(v, tuple) else v
                for k, v in sys_attributes(run_id, spec, index).items()
            }
            row |= {"sys/state": self.states.get(run_id, "Inactive")} | flat_paths("parameters", spec.params)
            row |= (
                spec.numbers
                | spec.attributes
                | {path: points[-1][1] for path, points in server_view(spec).items()}
                | {path: texts[-1][1] for path, texts in spec.strings.items() if texts}
            )
            rows.append(row)
        return types.SimpleNamespace(to_pandas=lambda: pd.DataFrame(rows))  # fmt: skip

    def stop(self):
        self.calls.stopped += 1


class StandInRun:
    def __init__(self, calls: Calls, run_id: str, spec: Spec) -> None:
        self.calls, self.run_id, self.spec = calls, run_id, spec

    def __getitem__(self, path: str):
        run = self

        class Handler:
            def fetch_values(self, *, include_timestamp=True, progress_bar=None):
                """A FloatSeries' or StringSeries' points, as the client's DataFrame (step, value, timestamp)."""
                if path not in run.spec.series and path not in run.spec.strings:
                    # neptune: a Float or String attribute has no fetch_values
                    kind = "String" if isinstance(run.spec.attributes.get(path), str) else "Float"
                    raise AttributeError(f"'{kind}' object has no attribute 'fetch_values'")
                run.calls.fetched.append((run.run_id, path))
                if run.calls.fail_on == run.run_id:
                    raise ConnectionError("server went away")
                points = run.spec.strings.get(path) or server_view(run.spec)[path]
                frame = {"step": [s for s, _ in points], "value": [v for _, v in points]}
                if include_timestamp:  # the client's naive local time: datetime.fromtimestamp(ms / 1000)
                    frame["timestamp"] = [
                        datetime.fromtimestamp(point_time(s).timestamp()) for s, _ in points
                    ]
                return pd.DataFrame(frame)

        return Handler()

    def get_structure(self):
        """The run's attributes as the client's nested dict of attribute objects (its real classes)."""
        import neptune.attributes as kinds

        simple = {bool: kinds.Boolean, int: kinds.Integer, float: kinds.Float, str: kinds.String}
        paths = {path: simple.get(type(value), kinds.String) for path, value in self.spec.attributes.items()}
        paths |= dict.fromkeys(self.spec.series, kinds.FloatSeries)
        paths |= dict.fromkeys(self.spec.strings, kinds.StringSeries)
        paths |= dict.fromkeys(self.spec.images, kinds.FileSeries)
        structure: dict = {}
        for path, kind in paths.items():
            *parents, leaf = path.split("/")
            node = structure
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = kind(None, path.split("/"))
        return structure

    def stop(self):
        self.calls.stopped += 1


# ------------------------------------------------------------------ Neptune 3 archives (forks, experiments)


@dataclass
class ForkedRun:
    """A Neptune 3 run as neptune-exporter's neptune3 exporter writes it: named by its custom run id, in an
    experiment, perhaps forked from `parent` at `fork_step`; `series` holds its own points only."""

    custom_id: str
    experiment: str
    series: dict[str, list[tuple[float, float]]]
    parent: str | None = None
    fork_step: float | None = None
    is_head: bool = False


def neptune3_attributes(run: ForkedRun, depth: int | None) -> dict[str, Any]:
    """The sys/* attributes a Neptune 3 run has beyond a Neptune 2 one's (the exporter's parameters pass)."""
    found: dict[str, Any] = {
        "sys/custom_run_id": run.custom_id,
        "sys/experiment/name": run.experiment,
        "sys/experiment/is_head": run.is_head,
    }
    if run.parent is not None:
        found |= {"sys/forking/parent": run.parent, "sys/forking/step": float(run.fork_step)}
        if depth is not None:
            found["sys/forking/depth"] = depth
    return found


def write_neptune3_archive(root: Path, runs: list[ForkedRun], project: str = PROJECT) -> Path:
    """A neptune3-exporter data folder: the archive's run_id is each run's sys/custom_run_id, sys/id a
    short id of the server's own; a fork's depth counts its ancestors in `runs` (a missing parent: 1)."""
    folder = root / exporter_name(project)
    folder.mkdir(parents=True)
    by_id = {run.custom_id: run for run in runs}

    def depth(run: ForkedRun, seen: tuple[str, ...] = ()) -> int | None:
        if run.parent is None:
            return None
        parent = by_id.get(run.parent)
        if parent is None or parent.custom_id in seen:  # missing, or a cycle (written as it is)
            return 1
        return 1 + (depth(parent, (*seen, run.custom_id)) or 0)

    for index, run in enumerate(runs):
        spec = Spec(
            run.custom_id, {"seed": index}, dict(run.series), attributes=neptune3_attributes(run, depth(run))
        )
        rows = exporter_rows(project, run.custom_id, spec, index)
        for row in rows:
            if row["attribute_path"] == "sys/id":
                row["string_value"] = f"N3-{index + 1}"
        table = pa.Table.from_pylist(rows, schema=EXPORTER_SCHEMA)
        pq.write_table(table, folder / f"{exporter_name(run.custom_id)}_part_0.parquet", compression="snappy")
    return root
