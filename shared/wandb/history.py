"""Run history over the W&B API: parquet export URLs from batched GraphQL, the files over pooled HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from shared.base.concurrency import batched
from shared.base.errors import Incomplete, describe, is_bug
from shared.base.retry import NO_RETRY, PermanentFailure, Retry
from shared.table.schema import HISTORY_SCHEMA, is_internal_key
from shared.wandb.tidy import rows_to_tidy, skipped_values, stacked_run_ids, wide_to_other, wide_to_tidy
from shared.wandb.transfers import Transfers, in_batches, runs_of_batch, runs_query

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    import wandb


Item = TypeVar("Item")


URL_BATCH = 25  # runs whose parquet URLs one GraphQL request asks for


# Downloaded runs made tidy together (a few calls per batch rather than per run), up to this many runs or
# bytes of files: long histories come in smaller batches, so memory stays bounded by the bytes.
TIDY_BATCH, TIDY_BATCH_BYTES = 32, 4 << 20


LOCATE_REQUESTS = 4  # such requests in flight at once


def parquet_history_query(count: int) -> str:
    """wandb-core's RunParquetHistory operation for `count` runs at once."""
    selection = "parquetHistory(liveKeys: $liveKeys) { parquetUrls liveData }"
    return runs_query("RunParquetHistory", "$liveKeys: [String!]!", selection, count)


@dataclass
class HistoryLocation:
    """Where a run's history is: its exported parquet files, and whether newer rows are not exported yet;
    or why it could not be located."""

    run: Any
    urls: list[str]
    has_live_rows: bool
    failure: str | None = None


class HistoryFetcher:
    """The history of one project's runs: `locate` in batches (one thread), `download` per run (many
    threads), then `tidy` in batches of runs (the consumer's thread).

    GraphQL goes through the wandb client (wandb-core). The parquet files, plain GETs of signed URLs as
    wandb-core does them, go through urllib3 connection pools into memory, with no temp files: urllib3
    rather than requests costs a third of the CPU per request, which counts at thousands of runs.
    """

    def __init__(
        self,
        api: wandb.Api,
        entity: str,
        project: str,
        *,
        keys: list[str] | None,
        workers: int,
        timeout_s: float,
        retry: Retry = NO_RETRY,
        keep_other: bool = False,
    ) -> None:
        self.api, self.entity, self.project, self.timeout_s = api, entity, project, timeout_s
        self.keys = keys
        self._wanted = None if keys is None else set(keys)
        self.keep_other = keep_other  # an export's: values that are not numbers become history_other rows
        self.retry = retry  # for the GraphQL requests; callers retry `download` as a whole
        self._transfers = Transfers(workers)

    def __enter__(self) -> HistoryFetcher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._transfers.close()

    def locate(self, runs: Iterable[Any]) -> Iterator[HistoryLocation]:
        """Each run with its parquet URLs, in order; URL_BATCH runs per GraphQL request, LOCATE_REQUESTS
        requests at a time (the caller's thread pages through `runs` meanwhile)."""
        with ThreadPoolExecutor(LOCATE_REQUESTS, thread_name_prefix="locate") as pool:
            for _, location in in_batches(pool, self._locate_batch, runs, URL_BATCH, LOCATE_REQUESTS):
                yield location

    def _locate_batch(self, runs: list[Any]) -> list[HistoryLocation]:
        """The batch's locations; a run (or the batch) that cannot be located is each run's failure: its
        record is kept, its history named as missing."""
        variables = {"entity": self.entity, "project": self.project, "liveKeys": ["_step"]}
        what = f"history locations of runs {runs[0].id}..{runs[-1].id}"
        query = parquet_history_query(len(runs))
        replies = runs_of_batch(
            self.api, self.retry, query, variables, [run.id for run in runs], what, self.timeout_s
        )
        if isinstance(replies, Exception):
            failure = f"could not be located ({describe(replies).removeprefix(f'{what}: ')})"
            return [HistoryLocation(run, [], False, failure) for run in runs]
        locations = []
        for run, reply in zip(runs, replies, strict=True):
            history = reply.get("parquetHistory")
            if not isinstance(history, dict):
                failure = "the server knows no such run (deleted during the export?)"
                locations.append(HistoryLocation(run, [], False, failure))
                continue
            urls = list(history.get("parquetUrls") or [])
            locations.append(HistoryLocation(run, urls, bool(history.get("liveData"))))
        return locations

    def download(self, location: HistoryLocation) -> Downloaded:
        """A run's exported files as bytes, and the rows logged after the last export (a run still going)
        through `scan_history`. Network only: parsing happens in `tidy`, on the consumer's thread, so the
        many download threads do not each keep an allocator's worth of freed arrow memory."""
        run = location.run
        if location.failure:
            return Downloaded(run.id, [], None, failure=location.failure)
        checked = [_checked(run.id, self._get(run.id, url)) for url in location.urls]
        files = [data for data, _ in checked]
        rows = sum(count for _, count in checked)
        live = None
        if location.has_live_rows:
            last_step = max((_last_step(data) for data in files), default=-1)
            scanned = _Counted(run.scan_history(keys=None, min_step=last_step + 1))
            live = rows_to_tidy(scanned, run.id, self.keys, keep_other=self.keep_other)
            rows += scanned.count
        _check_line_count(run, rows)
        return Downloaded(run.id, files, live)

    def _get(self, run_id: str, url: str) -> bytes:
        import urllib3

        try:
            response = self._transfers.pool(url).request("GET", url, timeout=self.timeout_s)
        except urllib3.exceptions.HTTPError as error:
            # The URL is signed: name the failure, never the URL (a ResponseError's text has none).
            reason = getattr(error, "reason", None) or error
            detail = f": {reason}" if isinstance(reason, urllib3.exceptions.ResponseError) else ""
            raise Incomplete(
                f"history of run {run_id}: download failed ({type(reason).__name__}{detail})"
            ) from None
        if response.status != 200:
            raise Incomplete(f"history of run {run_id}: download failed (HTTP {response.status})")
        return response.data

    def tidy_batches(
        self, downloads: Iterable[Downloaded]
    ) -> Iterator[tuple[list[Downloaded], pa.Table, dict[str, int], pl.DataFrame | None]]:
        """`downloads` in batches (TIDY_BATCH runs or TIDY_BATCH_BYTES of files), each with `tidy` of it.
        When a batch cannot be made tidy, its runs are made tidy one by one: a run whose files cannot be
        read is that run's failure, not its batch's."""
        for batch in batched(downloads, TIDY_BATCH, weight=lambda d: d.size, max_weight=TIDY_BATCH_BYTES):
            try:
                tidied = self.tidy(batch)
            except Exception as error:  # pyarrow's errors on a file it cannot read or convert
                if is_bug(error):
                    raise
                for downloaded in batch:
                    try:
                        self.tidy([downloaded])
                    except Exception as error:
                        if is_bug(error):
                            raise
                        downloaded.files, downloaded.live = [], None
                        downloaded.failure = f"unreadable history ({describe(error)})"
                tidied = self.tidy(batch)
            yield batch, *tidied

    def tidy(self, batch: Sequence[Downloaded]) -> tuple[pa.Table, dict[str, int], pl.DataFrame | None]:
        """Several runs' history as tidy rows (numeric values only), each run's count of values skipped, and
        with `keep_other` the values of exported files that are not numbers (history_other rows; those
        are not counted as skipped). Rows logged after the last export are read as numbers only.

        Exported files with one schema are stacked and made tidy at once: per file, only reading it
        costs calls. Each schema on its own: a key may be a number in one file and text in another.
        """
        import pyarrow as pa

        skipped = dict.fromkeys((downloaded.run_id for downloaded in batch), 0)
        by_schema: dict[tuple[tuple[str, pa.DataType], ...], list[tuple[str, pa.Table]]] = {}
        for downloaded in batch:
            for data in downloaded.files:
                wide = self._read(data)
                schema = tuple((field.name, field.type) for field in wide.schema)
                by_schema.setdefault(schema, []).append((downloaded.run_id, wide))
                if not self.keep_other:
                    skipped[downloaded.run_id] += skipped_values(wide)  # `_read` kept only wanted keys
        parts, others = [], []
        for files in by_schema.values():
            run_ids = stacked_run_ids([run_id for run_id, _ in files], [wide.num_rows for _, wide in files])
            stacked = pa.concat_tables([wide for _, wide in files])
            parts.append(wide_to_tidy(stacked, run_ids))
            if self.keep_other:
                others.append(wide_to_other(stacked, run_ids))
        for downloaded in batch:
            if downloaded.live is not None:
                live, live_skipped, live_other = downloaded.live
                if live_other is not None:
                    others.append(live_other)
                parts.append(live.to_arrow().cast(HISTORY_SCHEMA))
                skipped[downloaded.run_id] += live_skipped
        import polars as pl

        tidy = pa.concat_tables(parts) if parts else HISTORY_SCHEMA.empty_table()
        return tidy, skipped, (pl.concat(others) if others else None)

    def _read(self, data: bytes) -> pa.Table:
        """An exported file's step, time and wanted value columns (others are not decoded at all)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        file = pq.ParquetFile(pa.BufferReader(data))
        columns = [
            name
            for name in file.schema_arrow.names
            if name in ("_step", "_timestamp")
            or (not is_internal_key(name) and (self._wanted is None or name in self._wanted))
        ]
        return file.read(columns, use_threads=False)


@dataclass
class Downloaded:
    """A run's history as fetched: its exported parquet files, and tidy rows not exported yet (if any)."""

    run_id: str
    files: list[bytes]
    live: tuple[pl.DataFrame, int, pl.DataFrame | None] | None
    failure: str | None = None  # why the run's history could not be had (then files and live are empty)

    @property
    def size(self) -> int:
        """Bytes of its exported files."""
        return sum(len(data) for data in self.files)


def _checked(run_id: str, data: bytes) -> tuple[bytes, int]:
    """`data` and its row count if it is a whole parquet file of W&B's history layout: a file cut short is
    a transfer to retry; one without an integer `_step` column is the run's failure (its steps cannot be
    known). The footer is read once, here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(data) < 8 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise Incomplete(f"history of run {run_id}: a downloaded file is not whole parquet")
    try:
        footer = pq.ParquetFile(pa.BufferReader(data)).metadata
        schema = footer.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as error:
        raise PermanentFailure(f"history of run {run_id}: unreadable parquet ({error})") from None
    step = schema.field("_step").type if "_step" in schema.names else None
    if step is None or not pa.types.is_integer(step):
        found = "no _step column" if step is None else f"_step of type {step}"
        raise PermanentFailure(f"history of run {run_id}: unexpected history file ({found})")
    stamp = schema.field("_timestamp").type if "_timestamp" in schema.names else None
    if stamp is not None and not (pa.types.is_integer(stamp) or pa.types.is_floating(stamp)):
        raise PermanentFailure(
            f"history of run {run_id}: unexpected history file (_timestamp of type {stamp})"
        )
    return data, footer.num_rows


class _Counted:
    """An iterable that counts the items taken from it."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items, self.count = items, 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.count += 1
            yield item


def _check_line_count(run: Any, rows: int) -> None:
    """A finished run's history rows fetched against the server's `historyLineCount` (every Runs reply
    carries it): fewer is that run's failure. A run still going may log lines not exported yet, and
    `--history-keys` keeps every row (its `_step`), so only a finished run's shortfall counts."""
    expected = run._attrs.get("historyLineCount")
    if run._attrs.get("state") != "finished" or isinstance(expected, bool) or not isinstance(expected, int):
        return
    if rows < expected:
        raise PermanentFailure(
            f"history of run {run.id}: {rows} of the {expected} history rows the server counts arrived"
        )


def _last_step(data: bytes) -> int:
    """The highest `_step` in an exported file (-1 when it has none)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    file = pq.ParquetFile(pa.BufferReader(data))
    if "_step" not in file.schema_arrow.names:
        return -1
    highest = pc.max(file.read(["_step"], use_threads=False)["_step"]).as_py()
    return -1 if highest is None else int(highest)
