"""Offline W&B runs: read the client's transaction log (`run-<id>.wandb`) into a RunRecord and tidy history."""

# wandb >= 0.31 ships no Python reader for this log any more (its Go core reads it), so this one is ours.
# Layout: a 7-byte file header, then LevelDB-log framing in 32 KiB blocks, each logical record one
# serialized `wandb_internal_pb2.Record`.

from __future__ import annotations

import fnmatch
import json
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import polars as pl
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from wandb.proto import wandb_internal_pb2 as wandb_pb

from shared.base.errors import BadInput, Incomplete
from shared.base.limits import check_regular_file
from shared.table.history import empty_history, epoch_seconds_to_datetime
from shared.table.schema import RunRecord
from shared.wandb.log_history import HistoryColumns, empty_history_other
from shared.wandb.log_streams import LogStreams, empty_console, empty_system, merged_console
from shared.wandb.metadata import run_metadata

FILE_HEADER = struct.Struct("<4sHB")  # identifier, magic, version
FILE_IDENTIFIER, FILE_MAGIC, FILE_VERSION = b":W&B", 0xBEE1, 0
BLOCK_SIZE = 32 * 1024
FRAME_HEADER = struct.Struct("<IHB")  # crc32 of type byte + payload, payload length, fragment type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
READ_SIZE = 32 * BLOCK_SIZE  # whole blocks, so no frame straddles two reads
BATCH_BYTES = 1 << 20  # records decoded together
RUN_FOLDER_PREFIXES = ("offline-run-", "run-")
# A log with no exit record that was written to this recently is a job in progress, not a crashed one
# (while a job runs, wandb-core also samples system metrics into its log, every 15 s by default).
RUNNING_WINDOW = timedelta(minutes=10)

_TYPE_CRC = {kind: zlib.crc32(bytes([kind])) for kind in (FULL, FIRST, MIDDLE, LAST)}


class _Mark(Enum):
    """Summary operations that carry no JSON value."""

    REMOVED = "removed"  # the path was removed
    MAKES_DICT = "makes dict"  # a set of a nested path made this parent path a dict


_REMOVED, _MAKES_DICT = _Mark.REMOVED, _Mark.MAKES_DICT


class OfflineLogError(BadInput):
    """A path that holds no readable W&B run log (bad input: one line, exit 2)."""


@dataclass
class OfflineRun:
    """One run read from its log, with what was lost to corruption or truncation."""

    path: Path
    record: RunRecord
    history: pl.DataFrame
    skipped_values: int = 0  # history values that could not be represented (none: every JSON value can)
    lost_records: int = 0
    lost_bytes: int = 0
    run_recorded: bool = True  # the log holds its run record (else the id comes from the file name)
    history_other: pl.DataFrame = field(default_factory=empty_history_other)  # values that are not numbers
    console: pl.DataFrame = field(default_factory=empty_console)  # what it printed, when asked for
    system: pl.DataFrame = field(default_factory=empty_system)  # its system metrics, when asked for

    @property
    def in_progress(self) -> bool:
        """A log that holds no run record yet, and lost none: wandb-core buffers its log, so for a while a
        running job's log holds only its header. Not a run to export yet (damage that took the run
        record is another matter: that run is exported under the file name's id)."""
        return not self.run_recorded and not self.lost_records


def session_groups(logs: Iterable[Path]) -> list[list[Path]]:
    """Run logs grouped by the run id in their file name (`run-<id>.wandb`): each group holds the offline
    sessions of one run (several when it was resumed offline), in the order given."""
    groups: dict[str, list[Path]] = {}
    for log in logs:
        groups.setdefault(log.name, []).append(log)
    return list(groups.values())


def merged_runs(sessions: Sequence[OfflineRun]) -> list[tuple[OfflineRun, list[OfflineRun]]]:
    """Sessions of one entity/project/id merged into one run (with the sessions it came from), as W&B
    shows a resumed run after a sync: the latest session's state and fields, config and summary merged
    with later values winning, history merged by step (a later session's value wins), the first
    session's creation time. Sessions of different runs stay apart; each run's sessions are given oldest
    first (by creation time, then log path: `offline-run-<time>-<id>`), as they are merged."""
    by_run: dict[tuple[str, str, str], list[OfflineRun]] = {}
    for session in sessions:
        by_run.setdefault((session.record.entity, session.record.project, session.record.id), []).append(
            session
        )
    ordered = [
        sorted(group, key=lambda s: (s.record.created_at or _EPOCH, str(s.path))) for group in by_run.values()
    ]
    return [(_merged(group), group) for group in ordered]


def _merged(ordered: list[OfflineRun]) -> OfflineRun:
    """One run of its sessions, oldest first."""
    if len(ordered) == 1:
        return ordered[0]
    first, last = ordered[0].record, ordered[-1].record
    record = replace(
        last,
        created_at=first.created_at,
        config={key: value for session in ordered for key, value in session.record.config.items()},
        summary={key: value for session in ordered for key, value in session.record.summary.items()},
    )
    history, history_other = (
        pl.concat([getattr(session, name) for session in ordered])
        .unique(["step", "key"], keep="last", maintain_order=True)
        .sort("key", "step", maintain_order=True)
        for name in ("history", "history_other")
    )
    return OfflineRun(
        ordered[-1].path,
        record,
        history,
        sum(session.skipped_values for session in ordered),
        sum(session.lost_records for session in ordered),
        sum(session.lost_bytes for session in ordered),
        any(session.run_recorded for session in ordered),
        history_other,
        merged_console([session.console for session in ordered]),
        pl.concat([session.system for session in ordered]),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- locating logs -------------------------------------------------------------------------------


class UnreadableEntry(NamedTuple):
    """A file or folder under an offline source that could not be listed or read (permission denied, an
    I/O error, removed meanwhile): whose run it held is not known."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: cannot read ({self.reason})"


class LogReadError(Incomplete):
    """A run log that could not be read (permission denied, an I/O error, removed meanwhile): exit 1."""


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def locate_run_logs(path: Path | str) -> tuple[list[Path], list[UnreadableEntry]]:
    """The run logs under a `wandb/` folder, in an `offline-run-*`/`run-*` folder, or the `.wandb` file
    itself; and the entries below that could not be listed (named and counted by the caller).

    Folders are listed with scandir, whose errors are seen: a glob would skip an unreadable run folder
    without a word. OfflineLogError when `path` is no such thing or holds no run log and nothing unreadable.
    """
    path = Path(path)
    expected = "expected a wandb/ folder, an offline-run-*/run-* folder or a .wandb file"
    unreadable: list[UnreadableEntry] = []

    def listed(folder: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            unreadable.append(UnreadableEntry(folder, _reason(error)))
            return []

    def is_folder(entry: os.DirEntry[str]) -> bool:
        try:
            return entry.is_dir()
        except OSError as error:
            unreadable.append(UnreadableEntry(Path(entry.path), _reason(error)))
            return False

    try:
        if path.is_file():
            if path.suffix != ".wandb":
                raise OfflineLogError(f"{path}: not a W&B run log ({expected})")
            return [path], []
        if not path.is_dir():
            raise OfflineLogError(f"{path}: no such file or folder ({expected})")
    except PermissionError as error:  # a folder above it cannot be searched
        raise LogReadError(f"{path}: cannot read ({_reason(error)})") from None
    if path.name.startswith(RUN_FOLDER_PREFIXES):
        run_folders = [path]
    else:
        run_folders = [
            Path(entry.path)
            for entry in listed(path)
            if entry.name.startswith(RUN_FOLDER_PREFIXES) and is_folder(entry)
        ]
    logs = [
        Path(entry.path)
        for folder in run_folders
        for entry in listed(folder)
        if fnmatch.fnmatchcase(entry.name, "run-*.wandb")
    ]
    if not logs and not unreadable:
        raise OfflineLogError(f"{path}: no W&B run logs (run-*.wandb) found ({expected})")
    return sorted(logs), unreadable


# --- framing -------------------------------------------------------------------------------------


class _Framing:
    """Whole records out of the block framing; damaged stretches are skipped to the next block and counted."""

    def __init__(self) -> None:
        self.lost_records = 0
        self.lost_bytes = 0
        # Of those, lost at the very end: a record cut short, or one a running job is still writing.
        self.tail_records = 0
        self.tail_bytes = 0
        self._fragments: list[bytes] = []  # the FIRST (and MIDDLE) parts of a record still being read
        self._fragment_bytes = 0
        self._resyncing = False  # after damage: MIDDLE/LAST parts before the next record belong to the loss

    def records(self, stream: BinaryIO) -> Iterator[bytes]:
        """Each logical record's payload, in order; `stream` is positioned at the start of the file."""
        unpack_header, header_size = FRAME_HEADER.unpack_from, FRAME_HEADER.size
        crc32, type_crc = zlib.crc32, _TYPE_CRC
        position = FILE_HEADER.size  # within `data`, which always starts on a block boundary
        data = stream.read(READ_SIZE)
        while data:
            following = stream.read(READ_SIZE)  # read ahead: whether damage lies at the file's very end
            view, size, last = memoryview(data), len(data), not following
            while position < size:
                block_end = position - position % BLOCK_SIZE + BLOCK_SIZE
                if block_end > size:
                    block_end = size
                if block_end - position < header_size:  # the block's zero padding, or a header cut by EOF
                    if data[position:block_end].strip(b"\0"):
                        self._lose(block_end - position, at_end=last and block_end == size)
                    position = block_end
                    continue
                checksum, length, kind = unpack_header(data, position)
                start = position + header_size
                end = start + length
                if (
                    end > block_end
                    or kind not in type_crc
                    or crc32(view[start:end], type_crc[kind]) != checksum
                ):
                    if kind == 0 and length == 0:  # zero-filled (pre-allocated) space: nothing written here
                        self._settle()
                    else:
                        self._lose(block_end - position, at_end=last and end > block_end == size)
                    position = block_end
                    continue
                position = end
                if kind == FULL:
                    self._settle()
                    yield data[start:end]
                elif kind == FIRST:
                    self._settle()
                    self._fragments, self._fragment_bytes = [data[start:end]], header_size + length
                elif not self._fragments:  # a MIDDLE or LAST whose FIRST was not read
                    if self._resyncing:
                        self.lost_bytes += header_size + length
                    else:
                        self._lose(header_size + length)
                else:
                    self._fragments.append(data[start:end])
                    self._fragment_bytes += header_size + length
                    if kind == LAST:
                        yield b"".join(self._fragments)
                        self._fragments, self._fragment_bytes = [], 0
            position -= size
            data = following
        self._settle(at_end=True)  # the file may end inside a fragmented record

    def lose_record(self, size: int) -> None:
        """A record that framed correctly but does not decode."""
        self.lost_records += 1
        self.lost_bytes += size

    def _lose(self, skipped: int, at_end: bool = False) -> None:
        """Damage at the current position: the record being read, and the rest of the block, are lost."""
        if self._fragments or not self._resyncing:
            self.lost_records += 1
            self.tail_records += at_end
        self.lost_bytes += skipped + self._fragment_bytes
        self.tail_bytes += (skipped + self._fragment_bytes) * at_end
        self._fragments, self._fragment_bytes = [], 0
        self._resyncing = True

    def _settle(self, at_end: bool = False) -> None:
        """A new record starts cleanly here: a fragmented record left unfinished is lost."""
        if self._fragments:
            self.lost_records += 1
            self.lost_bytes += self._fragment_bytes
            self.tail_records += at_end
            self.tail_bytes += self._fragment_bytes * at_end
            self._fragments, self._fragment_bytes = [], 0
        self._resyncing = False


def _check_file_header(path: Path, header: bytes) -> None:
    if not header:
        raise OfflineLogError(f"{path}: empty file, not a W&B run log")
    if len(header) < FILE_HEADER.size:
        raise OfflineLogError(f"{path}: not a W&B run log (only {len(header)} bytes)")
    identifier, magic, version = FILE_HEADER.unpack(header)
    if identifier != FILE_IDENTIFIER or magic != FILE_MAGIC:
        raise OfflineLogError(f"{path}: not a W&B run log (header {header!r})")
    if version != FILE_VERSION:
        raise OfflineLogError(
            f"{path}: W&B log format version {version} is not supported (only {FILE_VERSION})"
        )


# --- protobuf views ------------------------------------------------------------------------------
# Records are decoded a batch at a time (the concatenation of ~1 MiB of records) through message
# types of our own that reuse wandb's field numbers. Parsing concatenated messages appends repeated
# fields and merges singular message fields, so a view can declare, say, `repeated HistoryRow history`
# to get one element per history record, or a singular `history` whose items are one `Columns` message
# to get every item key, nested key and JSON value of the batch as three flat lists: upb builds them in
# C, with no Python object per record or item. When each item has exactly one path element, those
# lists line up; otherwise wandb's own message types decode the items one by one.

_VIEWS_FILE = "run_tools/wandb_offline_views.proto"
_VIEWS_PACKAGE = "run_tools.wandb_offline"
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_SCALARS = {
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}


def _add_view(
    file: descriptor_pb2.FileDescriptorProto, name: str, wandb_type: type[Message], fields: str = ""
) -> None:
    """Add message `name` to `file`: `fields` like "repeated string key; Columns item" (numbers from `wandb_type`)."""
    message = file.message_type.add(name=name)
    for declaration in filter(None, (part.strip() for part in fields.split(";"))):
        *repeated, field_type, field_name = declaration.split()
        number = wandb_type.DESCRIPTOR.fields_by_name[field_name].number
        label = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if repeated else _OPTIONAL
        field = message.field.add(name=field_name, number=number, label=label)
        if field_type in _SCALARS:
            field.type = _SCALARS[field_type]
        else:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = field_type if field_type.startswith(".") else f".{_VIEWS_PACKAGE}.{field_type}"


def _views() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.Default()  # where wandb's own types live
    try:
        pool.FindFileByName(_VIEWS_FILE)  # already added (the module was imported again)
        return pool
    except KeyError:
        pass
    wandb_package = f".{wandb_pb.DESCRIPTOR.package}"
    file = descriptor_pb2.FileDescriptorProto(
        name=_VIEWS_FILE, package=_VIEWS_PACKAGE, syntax="proto3", dependency=[wandb_pb.DESCRIPTOR.name]
    )
    columns = "repeated string key; repeated string nested_key; repeated string value_json"
    _add_view(file, "Columns", wandb_pb.HistoryItem, columns)  # SummaryItem and ConfigItem: same numbers
    _add_view(file, "Empty", wandb_pb.HistoryItem)
    _add_view(
        file, "HistoryRow", wandb_pb.HistoryRecord, f"repeated Empty item; {wandb_package}.HistoryStep step"
    )
    _add_view(file, "HistoryColumns", wandb_pb.HistoryRecord, "Columns item")
    _add_view(file, "SummaryColumns", wandb_pb.SummaryRecord, "Columns update; Columns remove")
    _add_view(
        file,
        "RecordsBatch",
        wandb_pb.Record,
        "repeated HistoryRow history; repeated bytes summary; repeated bytes config; repeated bytes run;"
        " repeated bytes exit; repeated bytes environment; repeated bytes output; repeated bytes output_raw;"
        " repeated bytes stats",
    )
    _add_view(file, "HistoryColumnsBatch", wandb_pb.Record, "HistoryColumns history")
    _add_view(file, "HistoryItemsBatch", wandb_pb.Record, f"repeated {wandb_package}.HistoryRecord history")
    _add_view(file, "RunOrConfig", wandb_pb.Record, "bytes run; bytes config")
    pool.Add(file)
    return pool


def _view(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_views().FindMessageTypeByName(f"{_VIEWS_PACKAGE}.{name}"))


RecordsBatch = _view("RecordsBatch")  # one element per history record; raw bytes of the other kinds
HistoryColumnsBatch = _view("HistoryColumnsBatch")  # every history item of the batch, as three columns
HistoryItemsBatch = _view("HistoryItemsBatch")  # history records as wandb's own HistoryRecord
SummaryColumns = _view("SummaryColumns")  # one summary record's items as columns
RunOrConfig = _view("RunOrConfig")

Columns = tuple[list[str], list[str], list[str]]  # keys, nested-key elements, JSON values


def _columns(merged: Any) -> Columns:
    """A `Columns` message as lists (upb makes a new str on every access: read each once)."""
    return list(merged.key), list(merged.nested_key), list(merged.value_json)


def _aligned_names(keys: list[str], nested: list[str], values: list[str]) -> list[str] | None:
    """The item names when each item had exactly one path element (so names and values line up), else None."""
    if not keys and len(nested) == len(values):
        return nested
    if not nested and len(keys) == len(values):
        return keys
    return None


def _item_path(item: Any) -> tuple[str, ...]:
    return (item.key,) if item.key else tuple(item.nested_key)


# --- nested dicts (config, summary) ----------------------------------------------------------------


def _set_path(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
    *parents, leaf = path
    for name in parents:
        child = tree.get(name)
        if not isinstance(child, dict):
            child = tree[name] = {}
        tree = child
    tree[leaf] = value


def _make_dict(tree: dict[str, Any], path: Sequence[str]) -> None:
    for name in path:
        child = tree.get(name)
        if not isinstance(child, dict):
            child = tree[name] = {}
        tree = child


def _remove_path(tree: dict[str, Any], path: Sequence[str]) -> None:
    *parents, leaf = path
    for name in parents:
        tree = tree.get(name)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


SummaryPath = str | tuple[str, ...]  # a top-level key as itself (the common case, and cheap), else its path
Position = tuple[int, int]  # (summary record, item in it): when an operation happened
Operation = tuple[SummaryPath, Position, str | _Mark]  # the value as JSON, or what happened
# wandb-core sends `_wandb.runtime` (and `_runtime` as a key) after every step: a record that holds a
# nested path starting at `_wandb` cannot be read from merged columns, so it is decoded on its own.
_WANDB_NESTED_PATH = b"\x12\x06_wandb"


def _summary_path(item: Any) -> SummaryPath:
    if item.key:
        return item.key
    nested = item.nested_key
    return nested[0] if len(nested) == 1 else tuple(nested)


def _operations(record: int, payload: bytes) -> list[Operation]:
    """One summary record's updates, then its removals, in order.

    Setting a nested path also makes each of its parents a dict: that is an operation of its own
    (value `_MAKES_DICT`), which outlives the set itself when a later removal undoes the set.
    """
    summary = wandb_pb.SummaryRecord.FromString(payload)
    items = [(item, item.value_json) for item in summary.update]
    items += [(item, _REMOVED) for item in summary.remove]
    operations: list[Operation] = []
    for index, (item, value_json) in enumerate(items):
        path, position = _summary_path(item), (record, index)
        if value_json is not _REMOVED and isinstance(path, tuple):
            operations += [(path[:depth], position, _MAKES_DICT) for depth in range(1, len(path))]
        operations.append((path, position, value_json))
    return operations


def _overlaps(name: str, path: SummaryPath) -> bool:
    return name == path or (isinstance(path, tuple) and path[0] == name)


class _SummaryFold:
    """The final summary: each path's last operation, replayed in the order the operations happened.

    That gives the same tree as applying every update and removal in turn (with the parents a nested
    set creates kept as operations of their own), and each value is decoded once. W&B writes a summary record per logged step with one-element paths: a batch of those is read
    through merged columns, so only the paths' last values matter and no record is decoded on its own.
    The other records (W&B's runtime record after every step; removals; nested paths) are decoded one
    by one, once per distinct record in a batch. Where the two kinds touch the same path, the merged
    records are searched from the end for the exact moment of their last operation on it.
    """

    def __init__(self) -> None:
        self._value: dict[SummaryPath, str | _Mark] = {}  # path → its last value (JSON) or _REMOVED
        self._position: dict[SummaryPath, Position] = {}  # path → when that happened
        # parent path → when a nested set last made it a dict
        self._made_dict: dict[SummaryPath, Position] = {}
        self._records = 0

    def add(self, payloads: list[bytes]) -> None:
        """Fold in a batch of summary records (serialized SummaryRecords), in order."""
        base = self._records
        self._records += len(payloads)
        apart = [index for index, payload in enumerate(payloads) if _WANDB_NESTED_PATH in payload]
        merged = [index for index, payload in enumerate(payloads) if _WANDB_NESTED_PATH not in payload]
        operations = self._decode(base, payloads, apart)
        if not self._add_merged(base, payloads, merged, operations):
            operations += self._decode(base, payloads, merged)
        for path, position, value_json in operations:
            if value_json is _MAKES_DICT:
                self._made_dict[path] = max(position, self._made_dict.get(path, position))
            elif self._position.get(path, (-1, -1)) < position:
                self._value[path], self._position[path] = value_json, position

    @staticmethod
    def _decode(base: int, payloads: list[bytes], indices: list[int]) -> list[Operation]:
        """The operations of these records, each distinct record decoded once (the last copy counts)."""
        last_copy = {payloads[index]: index for index in indices}
        return [op for payload, index in last_copy.items() for op in _operations(base + index, payload)]

    def _add_merged(
        self, base: int, payloads: list[bytes], indices: list[int], others: list[Operation]
    ) -> bool:
        """Records whose items all have one-element paths, read together; False when some are not like that."""
        if not indices:
            return True
        summary = SummaryColumns.FromString(b"".join(payloads[index] for index in indices))
        names = None if summary.HasField("remove") else _aligned_names(*_columns(summary.update))
        if names is None:
            return False
        last_values = dict(zip(names, summary.update.value_json, strict=True))
        self._value.update(last_values)
        # Within the batch, order only matters against the other records' paths: find those exactly.
        self._position.update(dict.fromkeys(last_values, (base + indices[-1], 0)))
        touched = {name for name in last_values for path, _, _ in others if _overlaps(name, path)}
        for index in reversed(indices):
            if not touched:
                break
            record_names = _aligned_names(*_columns(SummaryColumns.FromString(payloads[index]).update)) or []
            for name in touched.intersection(record_names):
                self._position[name] = (base + index, record_names.index(name))
                touched.discard(name)
        return True

    def result(self) -> dict[str, Any]:
        operations = [(position, 0, path, _MAKES_DICT) for path, position in self._made_dict.items()]
        operations += [(self._position[path], 1, path, value) for path, value in self._value.items()]
        tree: dict[str, Any] = {}
        for _, _, path, value_json in sorted(operations, key=lambda operation: operation[:2]):
            key_path = (path,) if isinstance(path, str) else path
            if value_json is _MAKES_DICT:
                _make_dict(tree, key_path)
            elif value_json is _REMOVED:
                _remove_path(tree, key_path)
            else:
                _set_path(tree, key_path, json.loads(value_json))
        return tree


def _apply_config(config: dict[str, Any], record: Any) -> None:
    """Apply one ConfigRecord (updates, then removals) to the nested config."""
    for item in record.update:
        _set_path(config, _item_path(item), json.loads(item.value_json))
    for item in record.remove:
        _remove_path(config, _item_path(item))


# --- history -------------------------------------------------------------------------------------


# --- the run -------------------------------------------------------------------------------------


def _history_items(buffer: bytes) -> tuple[list[str], list[str], list[int]]:
    """Names and JSON values of every history item in a batch, and each record's item count.

    Clients up to 0.17 store `log({"eval": {"acc": a}})` as one item holding a dict; later ones as an
    item per leaf, `eval.acc`. The dict is split the same way, so an export does not depend on the release.
    """
    names, values, items_per_row = [], [], []
    for record in HistoryItemsBatch.FromString(buffer).history:
        count = len(names)
        for item in record.item:
            name = item.key or ".".join(item.nested_key)
            if item.value_json.startswith("{"):
                for leaf_name, leaf_value in _dotted_leaves(name, json.loads(item.value_json)):
                    names.append(leaf_name)
                    values.append(leaf_value)
            else:
                names.append(name)
                values.append(item.value_json)
        items_per_row.append(len(names) - count)
    return names, values, items_per_row


def _dotted_leaves(name: str, value: Any) -> list[tuple[str, str]]:
    """A logged dict as (dotted name, JSON value) leaves, as later clients store it (iterative: any depth)."""
    leaves, stack = [], [(name, value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and node:
            stack.extend((f"{path}.{key}", child) for key, child in reversed(node.items()))
        else:
            leaves.append((path, json.dumps(node)))
    return leaves


def _last_internals(buffer: bytes | None) -> dict[str, float]:
    """`_timestamp` and `_runtime` of the last history record in a batch."""
    if buffer is None:
        return {}
    items = HistoryItemsBatch.FromString(buffer).history[-1].item
    found = {item.key or ".".join(item.nested_key): item.value_json for item in items}
    numbers = {name: _number(json.loads(found[name])) for name in ("_timestamp", "_runtime") if name in found}
    return {name: number for name, number in numbers.items() if number is not None}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class _RunLog:
    """What the records of one log add up to, fed a batch of records at a time."""

    def __init__(self, include_history: bool, history_keys: set[str] | None, streams: LogStreams) -> None:
        self.include_history = include_history
        self.history = HistoryColumns(history_keys)
        self.streams = streams
        self.summary = _SummaryFold()
        self.config: dict[str, Any] = {}
        self.run: Any = None  # the last RunRecord: wandb re-sends it whole when the run changes
        self.exit: Any = None
        # wandb writes the environment in parts (software first, hardware later): each part's fields win.
        self.environment = wandb_pb.EnvironmentRecord()
        self.last_history_batch: bytes | None = None

    def add(self, payloads: list[bytes], framing: _Framing) -> None:
        buffer = b"".join(payloads)
        try:
            records = RecordsBatch.FromString(buffer)
        except DecodeError:  # framed intact but not a record: find which, count it lost, read the rest
            payloads = _decodable(payloads, framing)
            buffer = b"".join(payloads)
            records = RecordsBatch.FromString(buffer)
        if records.history:
            self.last_history_batch = buffer
            if self.include_history:
                self._add_history(buffer, records.history)
        if records.summary:
            self.summary.add(list(records.summary))
        for kind, raw in ((records.output, False), (records.output_raw, True)):  # a client writes one kind
            if kind:
                self.streams.add_output(list(kind), raw)
        if records.stats:
            self.streams.add_stats(list(records.stats))
        if records.run and records.config:  # a batch's view loses their order, and it matters here
            for payload in payloads:
                view = RunOrConfig.FromString(payload)
                if view.run:
                    self._add_run(view.run)
                elif view.config:
                    self._add_config(view.config)
        else:
            for run in records.run:
                self._add_run(run)
            for config in records.config:
                self._add_config(config)
        if records.exit:
            self.exit = wandb_pb.RunExitRecord.FromString(records.exit[-1])
        for payload in records.environment:
            part = wandb_pb.EnvironmentRecord.FromString(payload)
            for descriptor, _ in part.ListFields():
                self.environment.ClearField(descriptor.name)
            self.environment.MergeFrom(part)

    def _add_history(self, buffer: bytes, rows: Any) -> None:
        steps = [row.step.num if row.HasField("step") else None for row in rows]
        keys, nested, values = _columns(HistoryColumnsBatch.FromString(buffer).history.item)
        names = _aligned_names(keys, nested, values)
        # Some item has a nested path (media, a logged dict) or holds a dict (clients up to 0.17): item by item.
        if names is None or any(value.startswith("{") for value in values):
            names, values, items_per_row = _history_items(buffer)
        else:
            items_per_row = [len(row.item) for row in rows]
        self.history.add(names, values, items_per_row, steps)

    def _add_run(self, payload: bytes) -> None:
        self.run = wandb_pb.RunRecord.FromString(payload)
        _apply_config(self.config, self.run.config)

    def _add_config(self, payload: bytes) -> None:
        _apply_config(self.config, wandb_pb.ConfigRecord.FromString(payload))

    def record(self, path: Path, running: bool = False) -> RunRecord:
        run, exit_record, summary = self.run, self.exit, self.summary.result()
        if exit_record is None:
            state = "running" if running else "crashed"
        else:
            state = "finished" if exit_record.exit_code == 0 else "failed"
        created_at = (
            run.start_time.ToDatetime(tzinfo=UTC) if run is not None and run.HasField("start_time") else None
        )
        last_row = _last_internals(self.last_history_batch)
        # The exit record and W&B's periodic `_runtime` summary count whole seconds; the last row's is finer.
        runtimes = [
            exit_record.runtime if exit_record else None,
            last_row.get("_runtime"),
            _number(summary.get("_runtime")),
        ]
        runtime_s = max((float(runtime) for runtime in runtimes if runtime is not None), default=None)
        heartbeats = [epoch_seconds_to_datetime(last_row["_timestamp"])] if "_timestamp" in last_row else []
        if created_at is not None and runtime_s is not None:
            heartbeats.append(created_at + timedelta(seconds=runtime_s))
        environment = json_format.MessageToDict(self.environment)
        if run is not None and run.HasField("git"):  # clients before 0.19 wrote no environment records
            environment["git"] = json_format.MessageToDict(run.git)
        return RunRecord(
            id=run.run_id
            if run is not None
            else path.stem.removeprefix("run-"),  # run record lost: the file name
            entity=run.entity if run is not None else "",
            project=run.project if run is not None else "",
            name=(run.display_name or None) if run is not None else None,
            state=state,
            created_at=created_at,
            heartbeat_at=max(heartbeats, default=None),
            runtime_s=runtime_s,
            tags=list(run.tags) if run is not None else [],
            group=(run.run_group or None) if run is not None else None,
            job_type=(run.job_type or None) if run is not None else None,
            sweep=(run.sweep_id or None) if run is not None else None,
            user=self.environment.username or None,
            notes=(run.notes or None) if run is not None else None,
            url=None,
            **run_metadata(environment),
            **_fork(run),
            config={key: value for key, value in self.config.items() if key != "_wandb"},
            summary=summary,
        )


def _fork(run: Any) -> dict[str, Any]:
    """The run it was forked from and the step (`wandb.init(fork_from="<run>?_step=<n>")`: the run record's
    branch point); a rewind (`resume_from`) names the run itself and is no fork. W&B has no experiments."""
    if run is None or not run.HasField("branch_point"):
        return {}
    point = run.branch_point
    if not point.run or point.run == run.run_id or point.metric != "_step":
        return {}
    return {"parent_run_id": point.run, "fork_step": point.value}


def _decodable(payloads: list[bytes], framing: _Framing) -> list[bytes]:
    """The payloads that decode as records; the others are counted as lost."""
    kept = []
    for payload in payloads:
        try:
            RecordsBatch.FromString(payload)
            kept.append(payload)
        except DecodeError:
            framing.lose_record(len(payload))
    return kept


def read_run_log(
    path: Path | str,
    *,
    include_history: bool = True,
    history_keys: Iterable[str] | None = None,
    include_console: bool = False,
    include_system: bool = False,
    now: datetime | None = None,
) -> OfflineRun:
    """One run from its transaction log: record, tidy numeric history and what corruption cost.

    A corrupt or truncated stretch is skipped (reading resumes at the next 32 KiB block) and counted in
    `lost_records`/`lost_bytes`; nothing is printed. A log with no exit record is `running` when it was
    written to within RUNNING_WINDOW before `now` (a job in progress: the log is read as it was when
    opened, and an incomplete record at its end is the one being written, not a loss), else `crashed`.
    """
    path = Path(path)
    framing = _Framing()
    streams = LogStreams(include_console, include_system)
    log = _RunLog(include_history, set(history_keys) if history_keys is not None else None, streams)
    try:
        check_regular_file(path, "run log")  # a named pipe would be waited on forever
        with path.open("rb") as stream:
            _check_file_header(path, stream.read(FILE_HEADER.size))
            stream.seek(0)
            status = os.fstat(stream.fileno())  # before reading: a growing log's size and time move on
            batch: list[bytes] = []
            batch_bytes = 0
            for payload in framing.records(_Snapshot(stream, status.st_size)):
                batch.append(payload)
                batch_bytes += len(payload)
                if batch_bytes >= BATCH_BYTES:
                    log.add(batch, framing)
                    batch, batch_bytes = [], 0
            log.add(batch, framing)
    except OSError as error:
        raise LogReadError(f"{path}: cannot read ({_reason(error)})") from None
    except BadInput as error:  # from check_regular_file
        raise OfflineLogError(str(error)) from None
    written = datetime.fromtimestamp(status.st_mtime, UTC)
    running = log.exit is None and (now or datetime.now(UTC)) - written <= RUNNING_WINDOW
    record = log.record(path, running=running)
    return OfflineRun(
        path=path,
        record=record,
        history=log.history.frame(record.id) if include_history else empty_history(),
        lost_records=framing.lost_records - (framing.tail_records if running else 0),
        lost_bytes=framing.lost_bytes - (framing.tail_bytes if running else 0),
        run_recorded=log.run is not None,
        history_other=log.history.other_frame(record.id) if include_history else empty_history_other(),
        console=streams.console_frame(record.id),
        system=streams.system_frame(record.id),
    )


class _Snapshot:
    """The first `size` bytes of a file that may still be growing."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.left = stream, size

    def read(self, count: int) -> bytes:
        data = self.stream.read(min(count, self.left))
        self.left -= len(data)
        return data
