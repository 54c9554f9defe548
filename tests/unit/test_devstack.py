"""The local stack's choices that must hold across runs and machines, checked without starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.devstack import sqs_server
from services.devstack.envoy import REPO_ROOT
from services.devstack.sqs_server import (
    LOCALSTACK_PY311_VERSION,
    LOCALSTACK_VERSION,
    server_builds,
    sqs_server_choice,
)
from services.devstack.stack import default_state_dir, state_dir_for


def _state_dir_in_a_new_process(hash_seed: str) -> str:
    # Each process gets its own string-hash seed, as two `make run`s do.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", "from services.devstack.stack import default_state_dir; print(default_state_dir())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_the_state_dir_survives_a_restart() -> None:
    """`make run` finds the embedded PostgreSQL it made last time."""
    first, second = _state_dir_in_a_new_process("1"), _state_dir_in_a_new_process("2")
    assert first == second == str(default_state_dir())


def test_each_checkout_has_its_own_state_dir() -> None:
    assert state_dir_for(Path("/work/a")) != state_dir_for(Path("/work/b"))
    assert state_dir_for(Path("/work/a")) == state_dir_for(Path("/work/a"))


PY313 = "/opt/python3.13"
PY = "/project/.venv/bin/python"


def test_auto_prefers_localstack_on_python_313_then_on_the_running_python_then_moto() -> None:
    builds = server_builds("auto", PY313, PY, (3, 11))
    assert [(b.kind, b.python, b.venv_name) for b in builds] == [
        ("localstack", PY313, f"localstack-{LOCALSTACK_VERSION}"),
        ("localstack", PY, f"localstack-{LOCALSTACK_PY311_VERSION}-py3.11"),
        ("moto", PY, "moto-server"),
    ]


def test_without_python_313_auto_builds_localstack_492_with_the_running_python() -> None:
    builds = server_builds("auto", None, PY, (3, 12))
    assert [(b.kind, b.python) for b in builds] == [("localstack", PY), ("moto", PY)]
    localstack = builds[0]
    assert localstack.venv_name == "localstack-4.9.2-py3.12"
    assert "localstack-core[base-runtime]==4.9.2" in localstack.requirements
    assert "service_identity" in localstack.requirements
    assert localstack.constraints is not None
    assert set(localstack.constraints.split()) == {"cbor2<6", "pyopenssl<25", "cryptography<45"}
    # Started through the script that backports the FIFO delete-after-extension fix.
    (start,) = localstack.start_args
    assert Path(start).name == "localstack_fifo_fix.py" and Path(start).is_file()


def test_the_two_localstack_venvs_can_live_side_by_side() -> None:
    names = {b.venv_name for b in server_builds("auto", PY313, PY, (3, 11))}
    assert len(names) == 3


def test_moto_is_the_only_choice_on_a_python_localstack_492_does_not_run_on() -> None:
    assert [b.kind for b in server_builds("auto", None, PY, (3, 14))] == ["moto"]


def test_a_forced_choice_is_that_build_alone_or_a_clear_refusal() -> None:
    assert [b.venv_name for b in server_builds("localstack-py311", PY313, PY, (3, 11))] == ["localstack-4.9.2-py3.11"]
    assert [b.venv_name for b in server_builds("localstack", PY313, PY, (3, 11))] == ["localstack-2026.3.0"]
    assert [b.kind for b in server_builds("moto", PY313, PY, (3, 11))] == ["moto"]
    with pytest.raises(ValueError, match=r"Python 3\.13"):
        server_builds("localstack", None, PY, (3, 11))
    with pytest.raises(ValueError, match=r"3\.11 or 3\.12"):
        server_builds("localstack-py311", PY313, PY, (3, 13))


def test_the_sqs_server_setting_defaults_to_auto_and_refuses_anything_else() -> None:
    assert sqs_server_choice({}) == "auto"
    assert sqs_server_choice({"PAYRECON_SQS_SERVER": "localstack-py311"}) == "localstack-py311"
    with pytest.raises(ValueError, match="PAYRECON_SQS_SERVER"):
        sqs_server_choice({"PAYRECON_SQS_SERVER": "elasticmq"})


def test_auto_falls_back_to_the_next_build_only_when_an_install_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tried: list[str] = []

    def install(venv: Path, python: str, requirements: list[str], constraints: str | None) -> None:
        tried.append(venv.name)
        if venv.name.startswith("localstack-"):
            raise RuntimeError("no wheel for this platform")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("PAYRECON_SQS_SERVER", raising=False)
    monkeypatch.setattr(sqs_server, "find_python313", lambda: None)
    monkeypatch.setattr(sqs_server, "_pip_install", install)
    monkeypatch.setattr(sqs_server.sys, "version_info", (3, 11, 7, "final", 0))
    build, venv = sqs_server.ensure_server_env()
    assert tried == ["localstack-4.9.2-py3.11", "moto-server"]
    assert build.kind == "moto" and venv == tmp_path / "payrecon" / "moto-server"

    monkeypatch.setenv("PAYRECON_SQS_SERVER", "localstack-py311")  # forced: no fallback
    with pytest.raises(RuntimeError, match="no wheel"):
        sqs_server.ensure_server_env()


def test_a_venv_marked_ready_without_pyvenv_cfg_is_built_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What two interleaved builds left behind: the marker, but no venv that Python recognises."""
    built: list[Path] = []
    monkeypatch.setattr(sqs_server, "_build_venv", lambda venv, *_: built.append(venv))
    venv = tmp_path / "localstack-4.9.2-py3.11"
    venv.mkdir()
    (venv / ".payrecon-ready").write_text("ok\n")
    sqs_server._pip_install(venv, "python3", ["localstack-core"], None)
    assert built == [venv]
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    sqs_server._pip_install(venv, "python3", ["localstack-core"], None)
    assert built == [venv]  # complete: left alone
