"""Regenerates the Python contract modules, their .pyi stubs and Envoy's descriptor set.

Run as `python protos/generate.py [--out DIR]` (what `make protos` does). With --out the files are
written under DIR instead of in place, which is how the staleness test compares them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
DESCRIPTOR_PATH = Path("gateway") / "descriptor.pb"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("payrecon/**/*.proto"))


def include_paths() -> list[str]:
    import google.api  # googleapis-common-protos ships google/api/*.proto beside its modules

    googleapis_root = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(next(iter(grpc_tools.__path__))) / "_proto"
    return [str(PROTO_ROOT), str(googleapis_root), str(well_known)]


def _plugin(name: str) -> str:
    """A protoc plugin installed beside this Python (mypy-protobuf's console scripts)."""
    found = Path(sys.executable).parent / name
    if not found.exists():
        raise SystemExit(f"{name} not found beside {sys.executable}: install the dev extras (mypy-protobuf)")
    return str(found)


def generate(code_out: Path, descriptor_out: Path) -> None:
    code_out.mkdir(parents=True, exist_ok=True)
    descriptor_out.parent.mkdir(parents=True, exist_ok=True)
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    includes = [f"-I{p}" for p in include_paths()]
    args = [
        "protoc",
        *includes,
        f"--python_out={code_out}",
        # mypy-protobuf's stubs: typed messages and typed gRPC stubs/servicers for mypy --strict.
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={code_out}",
        f"--mypy_grpc_out=async_only:{code_out}",
        f"--grpc_python_out={code_out}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={descriptor_out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for source in sources:
        for package in Path(source).parents:
            if package != Path("."):
                (code_out / package / "__init__.py").touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="write here instead of in place")
    args = parser.parse_args(argv)
    if args.out:
        generate(args.out / "protos", args.out / DESCRIPTOR_PATH)
    else:
        generate(PROTO_ROOT, REPO_ROOT / DESCRIPTOR_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
