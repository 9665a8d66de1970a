"""Only the command-line shell (shared/cli) writes to the terminal: no other module of shared/ prints,
touches sys.stdout or sys.stderr or sets up something that draws, and the documented Python API runs a
query without a line of output (what happened is kept in `query.events`)."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"
CLI = SHARED / "cli"

# Names whose mere use writes to the terminal or hands the terminal on (`file=sys.stderr`, `key=print`).
USED = {
    "builtins.print",
    "builtins.input",
    "sys.stdout",
    "sys.stderr",
    "sys.__stdout__",
    "sys.__stderr__",
}
# Callables that write to the terminal, or set up something that does, when called.
CALLED = {
    "rich.print",
    "rich.console.Console",
    "rich.progress.Progress",
    "rich.progress.track",
    "rich.live.Live",
    "rich.pretty.pprint",
    "contextlib.redirect_stdout",
    "contextlib.redirect_stderr",
    "logging.basicConfig",
    "logging.StreamHandler",
    "pprint.pprint",
    "pprint.pp",
    "traceback.print_exc",
    "traceback.print_exception",
    "traceback.print_stack",
    "tqdm.tqdm",
    "tqdm.auto.tqdm",
    "click.echo",
    "click.secho",
}
BUILTINS = {"print", "input"}


def imported_names(tree: ast.AST) -> dict[str, str]:
    """Each name the module's imports bind (anywhere in it) -> the dotted name it stands for."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:  # `import rich.console` binds `rich`
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """The dotted name an expression such as `sys.stderr` or `Console` stands for, resolved through the
    module's imports (`print` and `input` are the builtins unless imported); None for anything else."""
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    if node.id in names:
        base = names[node.id]
    elif node.id in BUILTINS or node.id == "builtins":
        base = "builtins" if node.id == "builtins" else f"builtins.{node.id}"
    else:
        base = node.id
    return ".".join([base, *reversed(attributes)])


def terminal_writes(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, what) for each place in `source` that writes to the terminal: a use of print, input,
    sys.stdout or sys.stderr (a write, or passing them on), or a call of one of CALLED (rich's Console or
    Progress, contextlib.redirect_stdout, logging.basicConfig, ...)."""
    tree = ast.parse(source, filename)
    names = imported_names(tree)
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = dotted(node.func, names)
            if name in CALLED:
                found.add((node.lineno, f"calls {name}"))
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
            name = dotted(node, names)
            if name in USED:
                found.add((node.lineno, f"uses {name.removeprefix('builtins.')}"))
    return sorted(found)


def modules(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


# ------------------------------------------------------------------ the detector


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("print('hello')", [(1, "uses print")]),
        ("import sys\nsys.stderr.write('oops\\n')", [(2, "uses sys.stderr")]),
        ("import sys\n\nprint('x', file=sys.stdout)", [(3, "uses print"), (3, "uses sys.stdout")]),
        ("from sys import stderr as err\nerr.flush()", [(2, "uses sys.stderr")]),
        ("import sys\nlog(out=sys.stdout)", [(2, "uses sys.stdout")]),
        ("rows.sort(key=print)", [(1, "uses print")]),
        (
            "from rich.console import Console\nconsole = Console(stderr=True)",
            [(2, "calls rich.console.Console")],
        ),
        ("import rich.console as rc\nrc.Console()", [(2, "calls rich.console.Console")]),
        ("import rich.console\nrich.console.Console()", [(2, "calls rich.console.Console")]),
        (
            "from rich.progress import Progress\nwith Progress() as p:\n    pass",
            [(2, "calls rich.progress.Progress")],
        ),
        (
            "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n    pass",
            [(2, "calls contextlib.redirect_stdout")],
        ),
        ("import logging\nlogging.basicConfig(level=logging.INFO)", [(2, "calls logging.basicConfig")]),
    ],
    ids=[
        "print",
        "sys.stderr.write",
        "print-to-sys.stdout",
        "from-sys-import-stderr",
        "passing-sys.stdout",
        "print-as-callback",
        "Console(stderr=True)",
        "aliased-rich.console",
        "dotted-rich.console",
        "rich-Progress",
        "redirect_stdout",
        "logging.basicConfig",
    ],
)
def test_the_detector_finds_terminal_writes(source, expected):
    """Each way of writing to the terminal is found, at its line."""
    assert terminal_writes(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "fingerprint(x)",
        "print_table(rows)",
        "self.print('x')",
        "from shared.base.events import Progress\ndef f(progress: Progress) -> None:\n    progress.advance()",
        "from rich.console import Console\ndef show(console: Console) -> None:\n    pass",
        "import io\nbuffer = io.StringIO()\nbuffer.write('x')",
        "import logging\nlog = logging.getLogger(__name__)\nlog.warning('kept for the caller')",
        "stdout = b''\nstderr = stdout",
        "import sys\nsys.exit(1)",
    ],
    ids=[
        "fingerprint",
        "print_table",
        "method-named-print",
        "events-Progress",
        "Console-as-annotation",
        "StringIO",
        "getLogger",
        "local-stdout",
        "sys.exit",
    ],
)
def test_the_detector_leaves_other_code_alone(source):
    """Names that merely contain `print`, another module's Progress, a Console only named in an annotation,
    buffers and local variables called stdout are not terminal writes."""
    assert terminal_writes(textwrap.dedent(source)) == []


def test_the_detector_finds_the_shells_own_writes():
    """Run over shared/cli, the detector finds writes: the scan of the rest of shared/ is not vacuous."""
    found = [hit for path in modules(CLI) for hit in terminal_writes(path.read_text(), str(path))]
    assert found, "shared/cli writes to the terminal, yet the detector found nothing there"


# ------------------------------------------------------------------ shared/ outside the shell


def test_no_module_outside_the_shell_writes_to_the_terminal():
    """No module of shared/ but those of shared/cli prints, uses sys.stdout or sys.stderr, or builds a rich
    Console or Progress, redirects stdout or configures logging; each offender is listed as file:line."""
    scanned = [path for path in modules(SHARED) if CLI not in path.parents]
    assert len(scanned) > 30 and all(path.is_relative_to(SHARED) for path in scanned)
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in scanned
        for line, what in terminal_writes(path.read_text(), str(path))
    ]
    assert not offenders, "only shared/cli may write to the terminal:\n" + "\n".join(offenders)


# ------------------------------------------------------------------ the Python API


def neptune_topk():
    from shared.query.neptune import NeptuneQuery

    query = NeptuneQuery(None, source="samples/neptune/archive", cache=False)
    return query, query.query_topk("test/mse", k=3)


def wandb_topk():
    from shared.query.wandb import WandbQuery

    query = WandbQuery(source="samples/wandb")
    return query, query.query_topk("test/mse", k=3, aggregation="mean_all")


@pytest.mark.parametrize("run_query", [neptune_topk, wandb_topk], ids=["NeptuneQuery", "WandbQuery"])
def test_the_python_api_prints_nothing(run_query, capfd, caplog, monkeypatch):
    """A top-k query through the documented Python API on a bundled sample writes nothing to stdout or
    stderr (file descriptors 1 and 2, so a third-party client's output counts too) and logs no warning
    (which, outside pytest, Python would print to stderr), yet answers."""
    monkeypatch.chdir(ROOT)
    caplog.set_level(logging.WARNING)
    capfd.readouterr()

    query, runs = run_query()

    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), f"the Python API wrote to the terminal:\nstdout: {out!r}\nstderr: {err!r}"
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(runs) == 3, (
        f"expected the 3 best runs; notes: {query.events.notes}, warnings: {query.events.warnings}"
    )


def test_the_python_api_prints_nothing_in_a_fresh_interpreter():
    """The same two queries in a fresh Python, outside pytest's capture and logging: nothing is written to
    stdout or stderr (warnings and logging's last-resort handler included)."""
    program = textwrap.dedent(
        """
        from shared.query.neptune import NeptuneQuery
        from shared.query.wandb import WandbQuery

        neptune = NeptuneQuery(None, source="samples/neptune/archive", cache=False).query_topk("test/mse", k=3)
        wandb = WandbQuery(source="samples/wandb").query_topk("test/mse", k=3, aggregation="mean_all")
        assert len(neptune) == 3 and len(wandb) == 3, (len(neptune), len(wandb))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
