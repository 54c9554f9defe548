"""Renders deploy/k8s's overlays with the real kustomize, for the manifest tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")


def kustomize() -> list[str] | None:
    """A standalone `kustomize build`, else kubectl's embedded kustomize (`kubectl kustomize`, the
    code `kubectl apply -k` runs; kubectl is part of this machine kind's image)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The documents `kubectl apply -k deploy/k8s/overlays/<overlay>` would apply."""
    command = kustomize()
    if command is None:
        pytest.skip("no kustomize: neither `kustomize` nor `kubectl` (which embeds it) is on PATH")
    result = subprocess.run(
        [*command, str(REPO / "deploy" / "k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def find(documents: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Documents of `kind` (named `name`, generated names matched without their hash suffix)."""
    return [d for d in documents if d["kind"] == kind and (name is None or base_name(d) == name)]


def one(documents: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (document,) = find(documents, kind, name)
    return document


_HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")
GENERATED = {"payrecon-env", "payrecon-config", "payrecon-gateway", "payrecon-gateway-descriptor"}


def base_name(document: dict[str, Any]) -> str:
    name = str(document["metadata"]["name"])
    stripped = _HASH_SUFFIX.sub("", name)
    return stripped if stripped in GENERATED else name
