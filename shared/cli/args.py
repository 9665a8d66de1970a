"""argparse pieces every script shares, light to import: path, name, integer and time flags, --format."""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from shared.base.errors import EMPTY_PATH, BadInput
from shared.table.vocabulary import STATES, parse_state

MAX_INT_FLAG = 10**9  # more than any run count, step window or pool; 2**63 and up overflow polars


def path_argument(text: str) -> Path:
    """argparse type of a path flag: an empty one is refused (as a Path it would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(EMPTY_PATH)
    return Path(text)


def text_argument(text: str) -> str:
    """argparse type of a name or list flag: an empty one is refused (it would quietly mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def state_argument(text: str) -> str:
    """argparse type of `--state`: one of the run states both trackers share (Neptune's words as aliases)."""
    try:
        return parse_state(text)
    except BadInput as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--state: ")) from None


def add_states_argument(parser: argparse.ArgumentParser, verb: str) -> None:
    """The reading tools' `--state STATE`, repeatable or comma-separated (read by `parse_states`)."""
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help=f"{verb} runs in this state ({', '.join(STATES)}); repeatable or comma-separated",
    )


def parse_states(items: Sequence[str]) -> list[str]:
    """`--state`'s words (repeated, comma-separated) as run states, each once; BadInput for an unknown one."""
    return list(dict.fromkeys(parse_state(s) for item in items for s in item.split(",") if s.strip()))


FORMATS = ("table", "csv", "json", "markdown")


def add_format_argument(
    parser: argparse.ArgumentParser,
    *,
    aliases: Sequence[str] = (),
    formats: Sequence[str] = FORMATS,
    note: str = "",
) -> None:
    """`--format` (default `table`, the terminal table) and `--json`, its alias for `--format json`."""
    parser.add_argument(
        "--format",
        choices=[*formats, *aliases],
        default="table",
        help=f"what stdout gets: {', '.join(formats)} (default: table){note}",
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="the same as --format json"
    )


def int_argument(text: str) -> int:
    """argparse type of an integer flag: a whole number of at most MAX_INT_FLAG in size."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    shown = text if len(text) <= 30 else text[:27] + "…"
    if value > MAX_INT_FLAG:
        raise argparse.ArgumentTypeError(f"{shown} is too large (at most {MAX_INT_FLAG:,})")
    if value < -MAX_INT_FLAG:
        raise argparse.ArgumentTypeError(f"{shown} is too small (at least {-MAX_INT_FLAG:,})")
    return value


def add_inputs_source_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The reading tools' `--source PATH`: one of their positional INPUTs given as a flag (repeatable)."""
    parser.add_argument(
        "--source",
        action="append",
        type=path_argument,
        default=[],
        metavar="PATH",
        help=f"an INPUT given as a flag (repeatable){what}",
    )


def add_api_key_argument(parser: argparse.ArgumentParser) -> None:
    """`--api-key KEY`: the W&B tools' key as a flag (before WANDB_API_KEY, .env and ~/.netrc)."""
    parser.add_argument(
        "--api-key", metavar="KEY", help="W&B API key (prefer WANDB_API_KEY or .env: a flag shows up in `ps`)"
    )


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """`--timeout S`: how long to wait for one W&B request."""
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for one W&B request (default: 60)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


class ScriptParser(argparse.ArgumentParser):
    """A script's parser whose usage errors are one `error:` line (no usage block), a misspelt flag
    answered with the closest ones (`did you mean --metric?`)."""

    words: Sequence[str] = ()  # the command line being parsed

    def parse_known_args(self, args=None, namespace=None):
        self.words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        # A misspelt flag may surface as another error first (a required flag missing, a stray value).
        self.exit(2, f"error: {message}{did_you_mean_flag(self.words, self)} (see {self.prog} --help)\n")


def did_you_mean_flag(words: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """` (did you mean --metric?)` for the first word that looks like a flag the parser does not take
    (nor abbreviates) and is close to ones it does."""
    every = [flag for action in parser._actions for flag in action.option_strings]
    flags = [flag for flag in every if flag.startswith("--")]
    for word in words:
        if word == "--":
            break
        name = word.split("=", 1)[0]
        if len(name) > 2 and name[0] == "-" and name[1].isalpha() and name[:2] not in every:
            name = "-" + name  # -metric: a long flag with one dash (not -k3, a short flag and its value)
            close = [flag for flag in flags if flag.startswith(name)][:3] or difflib.get_close_matches(
                name, flags, n=3, cutoff=0.6
            )
        elif name.startswith("--") and not any(flag.startswith(name) for flag in flags):
            close = difflib.get_close_matches(name, flags, n=3, cutoff=0.6)
        else:
            continue
        if close:
            return f" (did you mean {' or '.join(close)}?)"
    return ""


def script_parser(prog: str, description: str | None, epilog: str) -> argparse.ArgumentParser:
    """The parser of a script, its description and examples shown as written."""
    return ScriptParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """The exporters' flags for the tidy streams beside history: `--include-console`,
    `--include-system-metrics` (their files are named in docs/schema.md)."""
    parser.add_argument(
        "--include-console",
        action="store_true",
        help="also export what each run printed: {stem}_console.parquet, one row per line (stdout and stderr)",
    )
    parser.add_argument(
        "--include-system-metrics",
        action="store_true",
        help="also export the tracker's system metrics (CPU, memory, GPU, ...) as logged:"
        " {stem}_system.parquet, one row per sample and key",
    )


def add_files_argument(parser: argparse.ArgumentParser) -> None:
    """The exporters' `--include-files GLOB` (the folder it fills is named in docs/schema.md)."""
    parser.add_argument(
        "--include-files",
        metavar="GLOB",
        type=text_argument,
        help="also keep the run files whose path in the run matches GLOB (one glob; * matches / too: '*'"
        " keeps all) under OUTPUT/files/{stem}/<run id>/, each checked against its listed size and md5;"
        " one already there is not fetched again ({stem}_files.parquet lists every run's files anyway)",
    )


def streams_asked(args: argparse.Namespace) -> frozenset[str]:
    """The names of the optional streams (schema.OPTIONAL_STREAMS) the stream flags ask for."""
    return frozenset(
        name
        for name, asked in (("console", args.include_console), ("system", args.include_system_metrics))
        if asked
    )
