"""The local stack's choices that must hold across runs and machines, checked without starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.devstack.envoy import REPO_ROOT
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
