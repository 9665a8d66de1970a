"""Security: no eval/exec/pickle of input, keys and tokens never written or printed, output names stay inside."""

from __future__ import annotations

import ast
import base64
import io
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.base.storage import output_path, safe_name, write_json
from shared.base.text import printable
from shared.cli.main import log, warn
from shared.cli.output import render
from tests.export_checks import ENTITY, cron_dataset, new_run, utc_now
from tests.test_bad_input import (
    SAMPLES,
    closed_port_url,
    isolated_env,
    neptune_token,
    odd_dataset,
    run_script,
)
from tests.wandb_standin import HookResult, RequestInfo, StandinServer

ROOT = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("shared", "wandb-tools", "neptune-tools")

# ------------------------------------------------------------------ (1) no eval/exec/pickle anywhere

DYNAMIC_CODE = {"eval", "exec", "compile", "__import__", "execfile"}
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
# Loaders that run code or unpickle what they read.
UNSAFE_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("torch", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("Expr", "deserialize"),
    ("LazyFrame", "deserialize"),
    ("DataFrame", "deserialize"),
}


def dynamic_code_uses(source: str, filename: str) -> list[str]:
    """Every call or import in `source` that runs text as code or unpickles data (comments and strings don't count)."""
    tree = ast.parse(source, filename)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            )
            found += [f"{where} imports {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in DYNAMIC_CODE:
                found.append(f"{where} calls {function.id}")
            elif isinstance(function, ast.Attribute):
                owner = function.value
                owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                dynamic = owner_name == "builtins" and function.attr in DYNAMIC_CODE
                if dynamic or (owner_name, function.attr) in UNSAFE_CALLS:
                    found.append(f"{where} calls {owner_name}.{function.attr}")
                if function.attr == "load" and owner_name == "np" and _keyword_true(node, "allow_pickle"):
                    found.append(f"{where} calls np.load(allow_pickle=True)")
            if _keyword_true(node, "shell"):
                found.append(f"{where} runs a shell (shell=True)")
        elif isinstance(node, ast.Name) and node.id in DYNAMIC_CODE and id(node) not in called:
            found.append(f"{where} refers to {node.id}")  # e.g. handed around as `run = eval`
    return found


def _keyword_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and not (isinstance(k.value, ast.Constant) and not k.value.value) for k in call.keywords
    )


def test_the_scanner_reads_code_not_text():
    source = """
# eval(user_input) in a comment is fine, and so is "exec(" in a string
note = "pickle.loads(data)"
import pickle as p
value = eval(text)
frame = pl.LazyFrame.deserialize(handle)
pattern = re.compile(text)
subprocess.run(command, shell=True)
subprocess.run(command, shell=False)
run = exec
"""
    found = dynamic_code_uses(source, "probe.py")
    assert found == [
        "probe.py:4 imports pickle",
        "probe.py:5 calls eval",
        "probe.py:6 calls LazyFrame.deserialize",
        "probe.py:8 runs a shell (shell=True)",
        "probe.py:10 refers to exec",
    ], found


def test_no_eval_exec_or_pickle_anywhere_in_the_tools():
    files = sorted(p for folder in CODE_FOLDERS for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 20
    found = [
        use for path in files for use in dynamic_code_uses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []


# ------------------------------------------------------------------ (2) keys and tokens never leak

WANDB_KEY = "w" + secrets.token_hex(20)[1:]  # 40 characters, recognisable, new every session
WRONG_WANDB_KEY = "x" + secrets.token_hex(20)[1:]
NEPTUNE_KEY = "neptune-" + secrets.token_hex(16)
URL_PASSWORD = "pw-" + secrets.token_hex(12)  # in WANDB_BASE_URL: user:password@host
FRAGMENT = 10  # any run of this many characters of a secret counts as a leak


def leak_patterns(secret: str) -> list[bytes]:
    """The secret, every fragment of it, and encodings a client might write (base64, as in auth headers)."""
    patterns = {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
    patterns |= {base64.b64encode(f"api:{secret}".encode()).decode()[:-4], secret[::-1]}
    return sorted(p.encode() for p in patterns)


def find_leaks(blobs: dict[str, bytes], secrets_: list[str]) -> list[str]:
    patterns = [(secret, pattern) for secret in secrets_ for pattern in leak_patterns(secret)]
    return sorted(
        {
            f"{where} holds (part of) {secret[:4]}…"
            for where, blob in blobs.items()
            for secret, p in patterns
            if p in blob
        }
    )


@dataclass(frozen=True)
class Call:
    id: str
    script: str
    argv: tuple[str, ...]
    codes: tuple[int, ...]  # what the call may end with
    env: dict[str, str] = field(default_factory=dict)
    server: bool = False  # WANDB_BASE_URL of the stand-in that accepts WANDB_KEY


NEPTUNE_DEAD = "{neptune_dead}"
W, N = "wandb-tools", "neptune-tools"
CALLS = [
    Call("le-ok", f"{W}/list_entities.py", ("--json",), (0,), {"WANDB_API_KEY": WANDB_KEY}, server=True),
    Call("ex-api-ok", f"{W}/export_runs.py", ("-e", "ünï-team", "-o", "out", "--include-history", "--json"), (0,),
         {"WANDB_API_KEY": WANDB_KEY}, server=True),
    Call("ex-api-key-flag", f"{W}/export_runs.py", ("--api-key", WANDB_KEY, "-e", "..", "-o", "out"), (0,),
         server=True),
    Call("ex-rejected-key", f"{W}/export_runs.py", ("-e", "ünï-team", "-o", "out"), (2,),
         {"WANDB_API_KEY": WRONG_WANDB_KEY}, server=True),
    Call("ex-dotenv-key-unreachable", f"{W}/export_runs.py", ("-e", "x", "-o", "out", "--timeout", "2"), (1,),
         {"WANDB_BASE_URL": "{closed}", "DOTENV": f"WANDB_API_KEY={WANDB_KEY}\n"}),
    Call("ex-offline", f"{W}/export_runs.py", ("--offline", str(SAMPLES), "-o", "out", "--include-history"), (0,),
         {"WANDB_API_KEY": WANDB_KEY, "NEPTUNE_API_TOKEN": "{token}"}),
    Call("ex-api-url-password", f"{W}/export_runs.py", ("-e", "ünï-team", "-o", "out", "--json"), (0,),
         {"WANDB_API_KEY": WANDB_KEY, "WANDB_BASE_URL": "{server_with_password}"}),
    Call("le-url-password-unreachable", f"{W}/list_entities.py", ("--timeout", "2"), (1,),
         {"WANDB_API_KEY": WANDB_KEY, "WANDB_BASE_URL": "{closed_with_password}"}),
    Call("wq-api", f"{W}/query_topk.py", ("ünï-team/prøject ü", "--metric", "loss", "-o", "top.json"), (0,),
         {"WANDB_API_KEY": WANDB_KEY}, server=True),
    Call("ag", f"{W}/aggregate_runs.py", ("{inputs}/good", "-o", "out/all.parquet", "--protocol", "all"), (0,),
         {"WANDB_API_KEY": WANDB_KEY, "NEPTUNE_API_TOKEN": "{token}"}),
    Call("an", f"{W}/analyze_runs.py", ("{inputs}/good", "-o", "top.csv"), (0,),
         {"WANDB_API_KEY": WANDB_KEY, "NEPTUNE_API_TOKEN": "{token}"}),
    Call("nq-archive", f"{N}/query_topk.py", ("{inputs}/archive", "--metric", "train/loss", "-o", "top.json"), (0,),
         {"NEPTUNE_API_TOKEN": "{token}", "WANDB_API_KEY": WANDB_KEY}),
    Call("nq-live-token-flag-rejected", f"{N}/query_topk.py",
         ("team/proj", "--metric", "loss", "--api-token", NEPTUNE_KEY), (2,)),
    Call("ne-archive", f"{N}/export_runs.py", ("--source", "{inputs}/archive", "-o", "out", "--include-history"), (0,),
         {"NEPTUNE_API_TOKEN": "{token}"}),
    Call("ne-live-unreachable", f"{N}/export_runs.py", ("-p", "team/proj", "-o", "out", "--api-token", "{token}"),
         (1,)),
]  # fmt: skip
CALLS = [call for call in CALLS if (ROOT / call.script).is_file()]


def with_password(url: str) -> str:
    """`url` with a user and password in its address, as some gateways and proxies want them."""
    return url.replace("http://", f"http://gateway-user:{URL_PASSWORD}@", 1)


@pytest.fixture(scope="module")
def secret_runs(tmp_path_factory):
    """Every call above, a few at a time; each in its own folder with its own HOME, TMPDIR and caches."""
    from tests.neptune_fixtures import write_archive

    inputs = tmp_path_factory.mktemp("secret-inputs")
    write_archive(inputs / "archive")
    made = run_script(
        "wandb-tools/export_runs.py",
        ["--offline", str(SAMPLES), "-o", "good"],
        cwd=inputs,
        env=isolated_env(inputs / "home"),
    )
    assert made.returncode == 0, made.stderr
    closed = closed_port_url()
    places = {"closed": closed, "inputs": str(inputs), "token": neptune_token(closed, NEPTUNE_KEY)}
    places["closed_with_password"] = with_password(closed)
    base = tmp_path_factory.mktemp("secret-runs")

    def run(call: Call, server: StandinServer) -> tuple[Call, Path, subprocess.CompletedProcess[str]]:
        folder = base / call.id
        folder.mkdir()
        env = isolated_env(folder / "home")
        if call.server:
            env["WANDB_BASE_URL"] = server.url
        for key, value in call.env.items():
            if key == "DOTENV":
                (folder / ".env").write_text(value)
            else:
                env[key] = value.format(**places, server_with_password=with_password(server.url))
        argv = [part.format(**places) for part in call.argv]
        return call, folder, run_script(call.script, argv, cwd=folder, env=env)

    with StandinServer(odd_dataset(), api_key=WANDB_KEY) as server, ThreadPoolExecutor(max_workers=3) as pool:
        return places["token"], list(pool.map(lambda call: run(call, server), CALLS))


def test_every_verb_keeps_keys_and_tokens_out_of_everything_it_writes_and_prints(secret_runs):
    token, secret_runs = secret_runs
    secrets_ = [WANDB_KEY, WRONG_WANDB_KEY, NEPTUNE_KEY, token, URL_PASSWORD]
    assert {call.script for call, _, _ in secret_runs} >= {
        str(p.relative_to(ROOT)) for folder in (W, N) for p in (ROOT / folder).glob("*.py")
    }, "a verb is not run with a key"
    leaks = []
    for call, folder, done in secret_runs:
        assert done.returncode in call.codes, f"{call.id}: exit {done.returncode}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{call.id}\n{done.stderr[-3000:]}"
        # Everything the call wrote: outputs, metadata, state and lock files, caches, the clients' logs.
        written = {
            f"{call.id}:{path.relative_to(folder)}": path.read_bytes()
            for path in folder.rglob("*")
            if path.is_file() and path.name != ".env"
        }
        written |= {f"{call.id}:stdout": done.stdout.encode(), f"{call.id}:stderr": done.stderr.encode()}
        leaks += find_leaks(written, secrets_)
    assert leaks == []
    outputs = sum(1 for _, folder, _ in secret_runs for p in folder.rglob("*.parquet"))
    assert outputs >= 5, "the successful calls wrote their parquet files"


def test_the_leak_scan_finds_a_key_in_pieces_and_encoded():
    key = WANDB_KEY
    hidden = {
        "log": b"...Authorization: Basic " + base64.b64encode(f"api:{key}".encode()) + b"\n",
        "metadata": f'{{"note": "key ends with {key[-12:]}"}}'.encode(),
        "clean": b"nothing to see here " + key[: FRAGMENT - 1].encode(),
    }
    assert [leak.split(" ")[0] for leak in find_leaks(hidden, [key])] == ["log", "metadata"]


# ------------------------------------------------------------------ (3) output names stay in the output folder

TRICKS = [
    "..", ".", "../..", "/etc/passwd", "a/../../b", "..\\..\\windows", "\x00", "~", "-rf", ".hidden",
    "\u2215", "\uff0f", "\u2024\u2024", "\u202e", "\u0338", "ü" * 300, "a" * 1000, "\udcff", "con", "nul.txt",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(TRICKS)
        | st.text(alphabet=st.sampled_from([*"./\\_-~a ", "\x00", "é", "\uff0e"]), max_size=12),
        min_size=1,
        max_size=3,
    )
)
def test_output_names_cannot_escape_the_output_folder(parts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("out")
    path = output_path(folder, *parts, suffix="_runs.parquet")
    assert path.parent == folder
    assert not path.name.startswith(".") and ".." not in path.name
    assert "/" not in path.name and "\\" not in path.name and "\x00" not in path.name
    assert len(path.name.encode("utf-8")) <= 255 - len(".XXXXXXXX.tmp.")
    write_json({"written": True}, path)  # the file system takes the name, and the file lands in the folder
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_distinct_long_names_stay_distinct():
    folder = Path("/nonexistent-out")
    names = {output_path(folder, "team", "p" * 400 + suffix, suffix=".json").name for suffix in "abc"}
    assert len(names) == 3
    for name in ("../../x", "..", "", ".", "/", "a/.."):
        assert safe_name(name) and "/" not in safe_name(name) and ".." not in safe_name(name)
        assert not safe_name(name).startswith(".")


# ------------------------------------------------------------------ (4) names from a server cannot forge lines

CONTROL_CHARACTERS = [chr(code) for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
# A newline that forges a line in a cron log, a carriage return that overwrites one, escape sequences
# (ESC and the C1 CSI) that clear a terminal, and rich markup that fails (`[/x]`) or styles.
FORGED = "evil\nerror: forged\r\x1b[2J\x9b31m[/x][red]"
ESCAPED = "evil\\nerror: forged\\r\\x1b[2J\\x9b31m[/x][red]"


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=st.sampled_from([*CONTROL_CHARACTERS, "a", "é", " ", "\\"]) | st.characters()))
def test_every_stderr_line_is_one_line_with_no_control_character(name):
    with redirect_stderr(io.StringIO()) as stderr:
        log(f"run {name}")
        warn(f"project {name}")
    lines = stderr.getvalue().split("\n")
    assert len(lines) == 3 and lines[2] == "", lines
    assert not set("".join(lines)) & set(CONTROL_CHARACTERS)


def test_control_characters_are_shown_as_escapes():
    assert printable(FORGED) == ESCAPED
    assert (
        printable("tab\there, DEL\x7f, NUL\x00, NEL\x85 é ü")
        == "tab\\there, DEL\\x7f, NUL\\x00, NEL\\x85 é ü"
    )


def test_a_project_name_with_control_characters_forges_no_line_on_stderr_nor_in_the_table(tmp_path):
    dataset = cron_dataset()
    dataset.add_project(ENTITY, FORGED, [new_run("forged1", utc_now() - timedelta(days=1))], is_team=True)
    with StandinServer(dataset) as server:
        env = isolated_env(tmp_path / "home") | {
            "WANDB_BASE_URL": server.url,
            "WANDB_API_KEY": server.api_key,
        }
        argv = ["-e", ENTITY, "-p", "*", "-o", "out", "--incremental"]
        done = run_script("wandb-tools/export_runs.py", argv, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    for output in (done.stdout, done.stderr):
        assert not set(output) & (set(CONTROL_CHARACTERS) - {"\n"}), output
        assert ESCAPED in output
    assert not [line for line in done.stderr.splitlines() if line.startswith("error")]
    row = next(line for line in done.stdout.splitlines() if ESCAPED in line)
    assert row.split()[0] == ENTITY and "1" in row.split(), "the project's row is one line"


@pytest.mark.parametrize("fmt", ["rich", "plain", "markdown"])
def test_result_tables_show_control_characters_as_escapes_on_one_row(fmt, capsys):
    table = pl.DataFrame({"name": [FORGED, "calm"], f"config_{FORGED}": [0.25, 0.5]})
    render(table, fmt, title=f"runs of {FORGED}")
    out = capsys.readouterr().out
    assert not set(out) & (set(CONTROL_CHARACTERS) - {"\n"}), out
    assert any(ESCAPED in line and "0.25" in line for line in out.splitlines()), "the run's row is one line"
    assert f"config_{ESCAPED}" in out


def test_a_server_echoing_the_key_in_an_error_leaves_it_in_no_client_log(tmp_path):
    """wandb-core logs failed requests with the server's error body; by default in ~/.cache, readable by
    all. The tools give it a private folder, removed at exit, unless WANDB_CACHE_DIR is set."""
    dataset = cron_dataset()
    with StandinServer(dataset, api_key=WANDB_KEY) as server:
        failed: list[str] = []

        def echo_key_once(request: RequestInfo) -> HookResult | None:
            if request.operation == "Runs" and not failed:
                failed.append(request.operation)
                return HookResult(status=500, body=f"internal error for key {WANDB_KEY}".encode())
            return None

        server.request_hook = echo_key_once
        env = isolated_env(tmp_path / "home") | {"WANDB_BASE_URL": server.url, "WANDB_API_KEY": WANDB_KEY}
        del env["WANDB_CACHE_DIR"]  # the client's default: the user's cache folder
        done = run_script(
            "wandb-tools/export_runs.py", ["-e", ENTITY, "-p", "beta", "-o", "out"], cwd=tmp_path, env=env
        )
    assert done.returncode == 0, done.stderr
    assert failed, "the key was echoed"
    written = {str(path): path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert find_leaks(written, [WANDB_KEY]) == []
    assert list((tmp_path / "home" / "tmp").iterdir()) == [], "the private log folder is removed"
