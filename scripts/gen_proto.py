"""Generate the protobuf/gRPC Python code for proto/ into src/verdict/_gen (or a given folder)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "src" / "verdict" / "_gen"
# The third-party protos proto/ imports (google/rpc/*): the copies buf lint and buf breaking read.
VENDOR_DIR = ROOT / "vendor" / "proto"
# The generated modules import each other as `verdict.v1.x`; inside our package they live under
# `verdict._gen.verdict.v1`, so the imports are rewritten after generation.
_IMPORT = re.compile(r"^from verdict\.v1 import", re.MULTILINE)


def generate(out: Path) -> None:
    """Run protoc (with mypy-protobuf stubs) over every .proto file into ``out``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    includes = [
        f"-I{PROTO_DIR}",
        f"-I{VENDOR_DIR}",
        f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
    ]
    args = [
        "protoc",
        *includes,
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    # protoc finds the mypy-protobuf plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        path.write_text(_IMPORT.sub("from verdict._gen.verdict.v1 import", text))
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
