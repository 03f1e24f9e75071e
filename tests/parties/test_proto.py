"""The committed generated stubs are exactly what ``parties/proto/generate.py`` makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from parties.proto import generate

pytest.importorskip("grpc_tools")


def test_regenerated_stubs_are_byte_identical(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert len(written) == 3 * len(generate.PROTOS)
    for path in written:
        committed = generate.REPO_ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is not committed; run make proto"
        assert path.read_bytes() == committed.read_bytes(), f"{committed} is stale; run make proto"


def test_stubs_import_with_package_paths() -> None:
    from parties.proto import control_pb2, dealer_pb2_grpc, transport_pb2, transport_pb2_grpc  # noqa: F401

    frame = transport_pb2.Frame(session_id="s", seq=3, kind=transport_pb2.FRAME_KIND_TENSOR, shape=[2, 2])
    assert transport_pb2.Frame.FromString(frame.SerializeToString()) == frame
    assert control_pb2.InferRequest(session_id="x").session_id == "x"
