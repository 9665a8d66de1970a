"""The flags the tools share, each concept with one spelling (and its aliases): the source of the README's
table "Flags every tool spells the same way", checked against every script's parser by
tests/test_vocabulary.py."""

from __future__ import annotations

from dataclasses import dataclass

from shared.table.vocabulary import STATE_ALIASES, STATES

# The tools, by the name the table uses, and their scripts.
TOOLS = {
    "analyze": "wandb-tools/analyze_runs.py",
    "aggregate": "wandb-tools/aggregate_runs.py",
    "list_entities": "wandb-tools/list_entities.py",
    "W&B query_topk": "wandb-tools/query_topk.py",
    "Neptune query_topk": "neptune-tools/query_topk.py",
    "W&B export_runs": "wandb-tools/export_runs.py",
    "Neptune export_runs": "neptune-tools/export_runs.py",
}
QUERIES = ("W&B query_topk", "Neptune query_topk")
OLD_SPELLINGS = ("--offline", "--export")  # aliases of --source kept from before the table
EXPORTERS = ("W&B export_runs", "Neptune export_runs")
RANKING = ("analyze", *QUERIES)
WANDB_SERVER = ("list_entities", "W&B query_topk", "W&B export_runs")  # the W&B tools that talk to a server
NEPTUNE_SERVER = ("Neptune query_topk", "Neptune export_runs")


@dataclass(frozen=True)
class Concept:
    """One row of the table: `flags` holds one tuple per flag, the option strings one argparse action
    of every tool in `tools` takes (the first is the spelling, the others its aliases); `shown` is how
    the README writes them."""

    shown: str
    flags: tuple[tuple[str, ...], ...]
    meaning: str
    tools: tuple[str, ...]


_ALIASES = ", ".join(f"`{alias}` = {state}" for alias, state in STATE_ALIASES.items())
CONCEPTS = (
    Concept(
        "`--metric NAME`",
        (("--metric",),),
        "the metric, as logged (`test/mse`) or as its column (`metric_test_mse`); an unknown one is exit 2"
        " with the closest names",
        RANKING,
    ),
    Concept(
        "`--maximize`, `--descending`",
        (("--maximize", "--descending"),),
        "higher is better (default: lower)",
        RANKING,
    ),
    Concept(
        "`--top N`, `-k N`",
        (("--top", "-k"),),
        "how many runs to show (analyze: rows of the ranking, default 10; query_topk: default 5)",
        RANKING,
    ),
    Concept(
        "`--format table\\|csv\\|json\\|markdown`, `--json`",
        (("--format",), ("--json",)),
        "what stdout gets (`table`: the terminal table; piped, plain text); `--json` is `--format json`;"
        " the exporters' summary is `table` or `json`",
        tuple(TOOLS),
    ),
    Concept(
        "`-o FILE`, `--output FILE`",
        (("-o", "--output"),),
        "also write the table, by extension: `.csv`, `.parquet`, `.json`, `.md`; another extension is exit 2"
        " before any work (aggregate: `-o` is the aggregate itself)",
        ("analyze", "aggregate", "list_entities", *QUERIES),
    ),
    Concept(
        "`-o DIR`, `--output DIR`",
        (("-o", "--output"),),
        "the exporters' output folder (default `wandb_export/`, `neptune_export/`)",
        EXPORTERS,
    ),
    Concept(
        "`--source PATH`",
        (("--source",),),
        "local files instead of a server: an export folder or `*_runs.parquet` of either tracker (the"
        " reading tools), W&B offline run logs (W&B tools; also spelt `--offline`, and `--export` in"
        " query_topk), a Neptune archive or `.neptune` folder (Neptune tools); a path in the place of"
        " query_topk's project and analyze's and aggregate's INPUTs are read the same way",
        ("analyze", "aggregate", *QUERIES, *EXPORTERS),
    ),
    Concept(
        "`--state STATE`",
        (("--state",),),
        f"only runs in this state: {', '.join(STATES)} (both trackers; Neptune's {_ALIASES});"
        " another word is exit 2 naming these",
        ("analyze", "aggregate", *QUERIES),
    ),
    Concept(
        "`--filter REGEX`, `--rules FILE`",
        (("--filter",), ("--rules",)),
        "only runs whose name matches (a plain word: a substring); TOML rules that parse run names",
        ("analyze", "aggregate"),
    ),
    Concept(
        "`--pareto METRIC`, `--pareto-maximize`, `--plot FILE`",
        (("--pareto",), ("--pareto-maximize",), ("--plot",)),
        "the runs no other run beats on both `--metric` and METRIC (`--pareto-maximize`: higher METRIC is"
        " better); `--plot`: also draw the answer to `.png`, `.svg` or `.pdf`",
        RANKING,
    ),
    Concept(
        "`--where EXPR`, `--aggregation`, `--n-steps N`, `--details KEYS`, `--log-y`",
        (("--where",), ("--aggregation",), ("--n-steps",), ("--details",), ("--log-y",)),
        "a SQL test over metrics; each run's value (last, mean_last_n, min, max, mean_all); more metrics"
        " to show; curves on a log axis (docs/topk.md)",
        QUERIES,
    ),
    Concept(
        "`--include-history`, `--include-console`, `--include-system-metrics`",
        (("--include-history",), ("--include-console",), ("--include-system-metrics",)),
        "also export every history value (numbers to `*_history.parquet`, the others to"
        " `*_history_other.parquet`), what runs printed (`*_console.parquet`), system metrics as logged"
        " (`*_system.parquet`); docs/schema.md has their columns",
        EXPORTERS,
    ),
    Concept(
        "`--include-history`",
        (("--include-history",),),
        "also merge the inputs' history (and console, system) files into `<output>_history.parquet`, …",
        ("aggregate",),
    ),
    Concept(
        "`--include-files GLOB`",
        (("--include-files",),),
        "also keep the run files whose path in the run matches one glob (`*` matches `/` too) under"
        " `OUTPUT/files/<entity>_<project>/<run id>/`, each checked against its size and md5; every export"
        " lists all run files in `*_files.parquet` anyway",
        EXPORTERS,
    ),
    Concept(
        "`-e`, `--entity ENTITY`",
        (("-e", "--entity"),),
        "the W&B entity (user or team); default: the key's own",
        ("list_entities", "W&B export_runs"),
    ),
    Concept(
        "`-p`, `--project PROJECT`",
        (("-p", "--project"),),
        "the project(s): on the server, or inside a folder holding several",
        ("Neptune query_topk", *EXPORTERS),
    ),
    Concept(
        "`--api-key KEY`",
        (("--api-key",),),
        "the W&B API key (a flag shows in `ps`: prefer WANDB_API_KEY or `.env`)",
        WANDB_SERVER,
    ),
    Concept(
        "`--api-token TOKEN`",
        (("--api-token",),),
        "the Neptune API token (prefer NEPTUNE_API_TOKEN or `.env`)",
        NEPTUNE_SERVER,
    ),
    Concept(
        "`--workers N`",
        (("--workers",),),
        "requests or downloads at once",
        ("list_entities", *QUERIES, *EXPORTERS),
    ),
    Concept(
        "`--timeout S`",
        (("--timeout",),),
        "seconds to wait for one W&B request",
        WANDB_SERVER,
    ),
)


def tools_text(tools: tuple[str, ...]) -> str:
    """How the table names a set of tools: `every tool`, `both query_topk`, …"""
    if set(tools) == set(TOOLS):
        return "every tool"
    names = [name for name in TOOLS if name in tools]
    for pair, both in ((QUERIES, "both query_topk"), (EXPORTERS, "both export_runs")):
        if set(pair) <= set(names):
            names[names.index(pair[0])] = both
            names.remove(pair[1])
    return ", ".join(names)


def flags_table() -> str:
    """The README's table of the shared flags, as markdown."""
    lines = ["| flag | meaning | tools |", "| --- | --- | --- |"]
    lines += [f"| {c.shown} | {c.meaning} | {tools_text(c.tools)} |" for c in CONCEPTS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # `uv run python -m shared.cli.flags`: the table to paste into the README
    print(flags_table(), end="")
