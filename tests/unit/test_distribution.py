"""The distribution is what gRPC clients install: its wheel carries the typed stubs (PEP 561), and the
README's client example type-checks against them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.readme import readme_block

REPO = Path(__file__).resolve().parents[2]
# Third-party modules without stubs or a py.typed marker; payrecon must NOT need to be listed here.
MYPY_CONFIG = """\
[mypy]
strict = True
python_version = 3.11

[mypy-google.rpc.*]
ignore_missing_imports = True
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel setuptools builds from pyproject.toml, from a copy of the sources (no build/ or
    egg-info left in the work tree)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("protos", "services"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return out / built.stdout.strip().splitlines()[-1]


def test_the_wheel_ships_the_contracts_with_their_stubs_and_a_py_typed_marker(wheel: Path) -> None:
    shipped = set(zipfile.ZipFile(wheel).namelist())
    committed = {str(p.relative_to(REPO / "protos")) for p in (REPO / "protos" / "payrecon").rglob("*_pb2*.py*")}
    assert any(name.endswith("_pb2_grpc.pyi") for name in committed)
    assert committed <= shipped, f"missing from the wheel: {sorted(committed - shipped)}"
    assert "payrecon/py.typed" in shipped


def test_the_readme_client_type_checks_against_the_installed_stubs(wheel: Path, tmp_path: Path) -> None:
    """mypy --strict on the README's example, with payrecon found only as an installed package (on
    the interpreter's path, where PEP 561 asks for py.typed) — not as source under mypy_path."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(
        site, members=[n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("payrecon/")]
    )
    example = tmp_path / "client" / "client.py"
    example.parent.mkdir()
    example.write_text(readme_block("grpc-client-example"))
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG)

    def mypy() -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--config-file",
                str(config),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--python-executable",
                sys.executable,
                str(example),
            ],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
        )

    checked = mypy()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The same package without its marker is "installed, but missing library stubs or py.typed".
    (site / "payrecon" / "py.typed").unlink()
    unmarked = mypy()
    assert unmarked.returncode == 1 and "py.typed" in unmarked.stdout, unmarked.stdout + unmarked.stderr
