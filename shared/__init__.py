"""The library under the scripts, in layers; a layer imports only the layers below it (tests/test_layers.py
runs the contracts in pyproject.toml):

    cli                            the verbs' shell: arguments, exit codes, the terminal (the only printing)
    export · query · analysis      what the verbs do: one export pipeline, top-k queries, tables and reports
    wandb · neptune                the trackers' sources (independent of each other)
    table                          the run table: its schema, the source contract, tidy history, series
    base                           errors, events, text, files, retries, concurrency

Only shared.cli writes to the terminal: below it, problems and progress go to the caller through
shared.base.events.
docs/architecture.md walks through the layers and where a new tracker or a new kind of run data goes.
"""

import sys

# A script's uv environment keeps the bytecode of what it imports even where PYTHONDONTWRITEBYTECODE=1 is set
# (many containers and cron setups): else every start compiles polars again (0.2 s). Only inside a virtual
# environment (uv's, which it owns), never into a system Python's. uv's own `compile-bytecode = true` would
# recompile the whole environment at every `uv run` (astral-sh/uv#12202): slower still.
if sys.prefix != sys.base_prefix:
    sys.dont_write_bytecode = False
