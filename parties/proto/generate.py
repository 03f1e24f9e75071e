#!/usr/bin/env python3
"""Compile the project's ``.proto`` files into Python modules (``make proto``).

The protos are compiled from the repository root with the path that mirrors
the package (``parties/proto/x.proto``), so protoc writes
``parties/proto/x_pb2.py``, ``x_pb2.pyi`` and ``x_pb2_grpc.py`` whose imports
already read ``from parties.proto import x_pb2``: nothing is patched after
generation, and the generated files are committed as they come out.

    python parties/proto/generate.py            # regenerate in place
    python parties/proto/generate.py --out DIR  # write the tree under DIR instead
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = Path("parties") / "proto"
PROTOS: tuple[str, ...] = ("control.proto", "transport.proto", "dealer.proto")

logger = logging.getLogger(__name__)


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Run ``grpc_tools.protoc`` on every proto; return the files written under ``out_dir``."""
    from grpc_tools import protoc  # dev dependency, imported only here

    out_dir = Path(out_dir)
    (out_dir / PROTO_DIR).mkdir(parents=True, exist_ok=True)
    proto_include = str(Path(protoc.__file__).parent / "_proto")
    written: list[Path] = []
    for name in PROTOS:
        source = PROTO_DIR / name
        args = [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"-I{proto_include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(REPO_ROOT / source),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {source}")
        stem = name.removesuffix(".proto")
        written += [out_dir / PROTO_DIR / f"{stem}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="root of the output tree (default: the repository)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(args.out):
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
