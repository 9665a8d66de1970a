"""Credential lookup order and secrecy; safe output names and atomic writes."""

from __future__ import annotations

import importlib
import os
import stat

import pytest

from shared.base import storage
from shared.base.errors import BadInput
from shared.base.storage import atomic_path, output_path, safe_name
from shared.base.text import redact
from shared.wandb.auth import wandb_credentials

KEYS = {
    name: f"{name.lower()}-{'k' * 32}" for name in ("FLAG", "ENV", "DOTENV_WANDB", "DOTENV_TEAM", "NETRC")
}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.chdir(work)
    monkeypatch.setattr("shared.base.settings.TOOLS_ROOT", tmp_path / "no-tools-root")
    return home, work


def _write_all_sources(home, work, monkeypatch):
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {KEYS['NETRC']}\n")
    (home / ".netrc").chmod(0o600)
    (work / ".env").write_text(
        f"GRAPH_DENOISE_TEAM_SERVICE={KEYS['DOTENV_TEAM']}\nWANDB_API_KEY={KEYS['DOTENV_WANDB']}\n"
    )
    monkeypatch.setenv("WANDB_API_KEY", KEYS["ENV"])


def test_lookup_order_flag_env_dotenv_netrc(isolated, monkeypatch):
    home, work = isolated
    _write_all_sources(home, work, monkeypatch)
    assert wandb_credentials(KEYS["FLAG"]).source == "--api-key"
    assert wandb_credentials().api_key == KEYS["ENV"]
    monkeypatch.delenv("WANDB_API_KEY")
    assert wandb_credentials().api_key == KEYS["DOTENV_WANDB"]
    (work / ".env").write_text(f"GRAPH_DENOISE_TEAM_SERVICE={KEYS['DOTENV_TEAM']}\n")
    found = wandb_credentials()
    assert (found.api_key, found.source) == (KEYS["DOTENV_TEAM"], ".env (GRAPH_DENOISE_TEAM_SERVICE)")
    (work / ".env").unlink()
    assert wandb_credentials().api_key == KEYS["NETRC"]


def test_dotenv_is_found_from_a_subfolder_and_sets_the_base_url(isolated, monkeypatch):
    _home, work = isolated
    (work / ".env").write_text(
        f"WANDB_API_KEY={KEYS['DOTENV_WANDB']}\nWANDB_BASE_URL=http://wandb.internal:8080/\n"
    )
    (work / "sub").mkdir()
    monkeypatch.chdir(work / "sub")
    found = wandb_credentials()
    assert found.base_url == "http://wandb.internal:8080"
    assert found.api_key == KEYS["DOTENV_WANDB"]


def test_netrc_entry_must_match_the_server_host(isolated, monkeypatch):
    home, _work = isolated
    (home / ".netrc").write_text(f"machine wandb.internal login u password {KEYS['NETRC']}\n")
    (home / ".netrc").chmod(0o600)
    with pytest.raises(BadInput):
        wandb_credentials()
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.internal:8080")
    assert wandb_credentials().api_key == KEYS["NETRC"]


def test_missing_key_names_all_four_places(isolated):
    with pytest.raises(BadInput) as caught:
        wandb_credentials()
    message = str(caught.value)
    for place in (
        "--api-key",
        "WANDB_API_KEY",
        ".env",
        "GRAPH_DENOISE_TEAM_SERVICE",
        "wandb login",
        ".netrc",
    ):
        assert place in message


def test_found_keys_never_show_in_repr_or_messages(isolated, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEYS["ENV"])
    found = wandb_credentials()
    assert KEYS["ENV"] not in repr(found)
    assert redact(f"request failed with key {KEYS['ENV']}") == "request failed with key ***"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("team/project", "team_project"),
        ("../../etc", "____etc"),
        (".hidden", "hidden"),
        ("", "_"),
        ("λ-runs", "λ-runs"),
    ],
)
def test_safe_name(raw, expected):
    assert safe_name(raw) == expected


def test_output_paths_never_leave_the_folder(tmp_path):
    path = output_path(tmp_path, "../..", "../secret", suffix="_runs.parquet")
    assert path.parent == tmp_path and "/" not in path.name


def test_atomic_path_leaves_nothing_on_error_and_replaces_on_success(tmp_path):
    final = tmp_path / "out.json"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as temp:
        temp.write_text("half")
        raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with atomic_path(final) as temp:
        temp.write_text("new")
    assert final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_outputs_get_the_umask_permissions_not_owner_only(tmp_path):
    previous = os.umask(0o022)
    try:
        importlib.reload(storage)  # the module reads the umask once, at import
        with storage.atomic_path(tmp_path / "shared.json") as temp:
            temp.write_text("{}")
    finally:
        os.umask(previous)
        importlib.reload(storage)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644
