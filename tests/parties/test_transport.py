"""Transport guarantees, with the peer in a separate process: TLS, dead peers, bad frames, session isolation."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch

from parties.communicator import GrpcCommunicator
from parties.pair import free_port
from parties.proto import transport_pb2, transport_pb2_grpc
from parties.tls import channel_credentials, server_credentials, write_certs
from parties.transport import (
    Endpoint, Limits, NetworkShape, SessionFailed, Shaper, encode_tensor_frames, parse_frame, tensor_frames,
)
from tests.parties.peer_worker import all_reduce_rounds, run_peer

pytestmark = pytest.mark.timeout(120)


def _endpoint(ports: tuple[int, int], certs: Path | None, **kwargs) -> Endpoint:
    return Endpoint(
        0,
        f"127.0.0.1:{ports[0]}",
        f"127.0.0.1:{ports[1]}",
        server_credentials=server_credentials(certs, "party0") if certs else None,
        channel_credentials=channel_credentials(certs, "party0") if certs else None,
        **kwargs,
    )


def _spawn_peer(ports: tuple[int, int], certs: Path | None, sessions: list, die_after: int | None = None) -> mp.Process:
    proc = mp.get_context("spawn").Process(target=run_peer, args=(1, ports, str(certs) if certs else None, sessions, die_after))
    proc.start()
    return proc


def test_concurrent_sessions_do_not_mix(certs: Path) -> None:
    ports = (free_port(), free_port())
    peer = _spawn_peer(ports, certs, [("s-a", 1000, 30), ("s-b", 5000, 30)])
    endpoint = _endpoint(ports, certs)
    results: dict[str, list[int]] = {}

    def one(session_id: str, offset: int) -> None:
        with endpoint.session(session_id, 60.0) as session:
            results[session_id] = all_reduce_rounds(GrpcCommunicator(session), offset, 30)

    try:
        threads = [threading.Thread(target=one, args=("s-a", 0)), threading.Thread(target=one, args=("s-b", 100))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # session a: 0+i and 1000+i; session b: 100+i and 5000+i
        assert results["s-a"] == [1000 + 2 * i for i in range(30)]
        assert results["s-b"] == [5100 + 2 * i for i in range(30)]
    finally:
        peer.join(30)
        endpoint.close()
    assert peer.exitcode == 0


def test_killed_peer_fails_the_session_within_its_deadline_and_the_next_works(certs: Path) -> None:
    ports = (free_port(), free_port())
    peer = _spawn_peer(ports, certs, [("s-1", 0, 10)], die_after=3)
    endpoint = _endpoint(ports, certs)
    try:
        deadline_s = 20.0
        with endpoint.session("s-1", deadline_s) as session:
            comm = GrpcCommunicator(session)
            assert all_reduce_rounds(comm, 0, 3) == [0, 2, 4]
            t0 = time.monotonic()
            with pytest.raises(SessionFailed) as err:
                all_reduce_rounds(comm, 3, 7)
            assert time.monotonic() - t0 < deadline_s
            assert err.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        peer.join(10)
        assert peer.exitcode is not None and peer.exitcode < 0  # killed
        # a fresh peer on the same address; the next session works
        peer = _spawn_peer(ports, certs, [("s-2", 0, 5)])
        with endpoint.session("s-2", 30.0) as session:
            assert all_reduce_rounds(GrpcCommunicator(session), 0, 5) == [0, 2, 4, 6, 8]
    finally:
        peer.join(30)
        endpoint.close()


def test_receive_times_out_at_the_deadline() -> None:
    ports = (free_port(), free_port())
    endpoint = _endpoint(ports, None)
    try:
        with endpoint.session("lonely", 0.5) as session:
            t0 = time.monotonic()
            with pytest.raises(SessionFailed) as err:
                session.recv_tensor("x")
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert 0.4 < time.monotonic() - t0 < 3.0
    finally:
        endpoint.close()


def test_peer_without_a_valid_certificate_is_refused(certs: Path, tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    endpoint = _endpoint(ports, certs)
    target = f"127.0.0.1:{ports[0]}"
    other_ca = tmp_path / "other"
    write_certs(other_ca, roles=("party1",))
    attempts = {
        "plaintext": grpc.insecure_channel(target),
        "no client cert": grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=(certs / "ca" / "ca.pem").read_bytes())),
        "cert from another CA": grpc.secure_channel(
            target,
            grpc.ssl_channel_credentials(
                root_certificates=(certs / "ca" / "ca.pem").read_bytes(),
                private_key=(other_ca / "party1" / "party1.key").read_bytes(),
                certificate_chain=(other_ca / "party1" / "party1.pem").read_bytes(),
            ),
        ),
    }
    try:
        for name, channel in attempts.items():
            with pytest.raises(grpc.RpcError) as err:
                transport_pb2_grpc.PeerTransportStub(channel).Ping(transport_pb2.PingRequest(), timeout=3)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name
            channel.close()
        good = grpc.secure_channel(target, channel_credentials(certs, "party1"))
        assert transport_pb2_grpc.PeerTransportStub(good).Ping(transport_pb2.PingRequest(), timeout=3).rank == 0
        good.close()
        # a valid certificate of another role may ping but not send frames
        other_role = grpc.secure_channel(target, channel_credentials(certs, "coordinator"))
        with pytest.raises(grpc.RpcError) as err:
            transport_pb2_grpc.PeerTransportStub(other_role).Send(tensor_frames("r", 0, 1, "x", torch.arange(2))[0], timeout=3)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        other_role.close()
    finally:
        endpoint.close()


def test_malformed_and_oversized_frames_get_grpc_errors() -> None:
    ports = (free_port(), free_port())
    endpoint = _endpoint(ports, None, limits=Limits(max_frame_bytes=1 << 16))
    stub = transport_pb2_grpc.PeerTransportStub(grpc.insecure_channel(f"127.0.0.1:{ports[0]}"))
    tensor = dict(kind=transport_pb2.FRAME_KIND_TENSOR, dtype="int64", chunk_count=1)
    bad = {
        "no session": transport_pb2.Frame(shape=[1], data=b"\0" * 8, **tensor),
        "no kind": transport_pb2.Frame(session_id="m", shape=[1], data=b"\0" * 8),
        "bad dtype": transport_pb2.Frame(session_id="m", kind=transport_pb2.FRAME_KIND_TENSOR, dtype="complex", chunk_count=1),
        "size mismatch": transport_pb2.Frame(session_id="m", shape=[3], data=b"\0" * 8, **tensor),
        "negative dim": transport_pb2.Frame(session_id="m", shape=[-1], **tensor),
        "bad chunk": transport_pb2.Frame(session_id="m", shape=[1], data=b"\0" * 8, chunk_index=2, kind=1, dtype="int64", chunk_count=2),
    }
    try:
        for name, frame in bad.items():
            with pytest.raises(grpc.RpcError) as err:
                stub.Send(frame, timeout=3)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        big = transport_pb2.Frame(session_id="m", shape=[1 << 14], data=b"\0" * (1 << 17), **tensor)
        with pytest.raises(grpc.RpcError) as err:
            stub.Send(big, timeout=3)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        huge = transport_pb2.Frame(session_id="m", shape=[1 << 40], data=b"", **tensor)
        with pytest.raises(grpc.RpcError) as err:
            stub.Send(huge, timeout=3)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # out-of-order sequence numbers are refused and fail that session
        frames = tensor_frames("seq", 0, 1, "x", torch.arange(4))
        stub.Send(frames[0], timeout=3)
        with pytest.raises(grpc.RpcError) as err:
            stub.Send(frames[0], timeout=3)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # the server is still up and a good frame is delivered
        good = tensor_frames("ok", 0, 1, "x", torch.arange(6).reshape(2, 3))
        stub.Send(good[0], timeout=3)
        with endpoint.session("ok", 5.0) as session:
            assert torch.equal(session.recv_tensor("x"), torch.arange(6).reshape(2, 3))
    finally:
        endpoint.close()


def test_large_tensors_are_chunked_and_reassembled() -> None:
    frames = tensor_frames("c", 0, 0, "x", torch.arange(3 * (1 << 19)), chunk_bytes=4 << 20)
    assert [f.chunk_index for f in frames] == [0, 1, 2] and all(f.chunk_count == 3 for f in frames)
    assert [f.seq for f in frames] == [0, 1, 2]


@pytest.mark.parametrize("tensor", [
    torch.arange(3 * (1 << 17)).reshape(3, -1), torch.tensor(7), torch.empty(0, 4), torch.rand(1000) < 0.5,
    torch.randn(5, 7).double(), torch.randint(-100, 100, (4097,), dtype=torch.int8),
], ids=["int64-3-chunks", "scalar", "empty", "bool", "float64", "int8-odd"])
def test_encoded_frames_are_the_protobuf_messages(tensor: torch.Tensor) -> None:
    """The data field appended to a serialized header parses to exactly the message protobuf would make."""
    for chunk in (1 << 20, 4096):
        encoded = encode_tensor_frames("s", 5, 1, "t", tensor, chunk_bytes=chunk)
        frames = [transport_pb2.Frame.FromString(e) for e in encoded]
        data = tensor.contiguous().numpy().tobytes()
        count = max(1, -(-len(data) // chunk))
        expected = [transport_pb2.Frame(session_id="s", seq=5 + i, src_rank=1, kind=transport_pb2.FRAME_KIND_TENSOR, tag="t",
                                        dtype=frames[0].dtype, shape=list(tensor.shape), data=data[i * chunk : (i + 1) * chunk],
                                        chunk_index=i, chunk_count=count) for i in range(count)]
        assert frames == expected
        assert [len(e) for e in encoded] == [f.ByteSize() for f in expected]
        for e, f in zip(encoded + [f.SerializeToString() for f in expected], expected + expected):  # ours, and protobuf's order
            parsed = parse_frame(e)
            assert bytes(parsed.data) == f.data
            f2 = transport_pb2.Frame()
            f2.CopyFrom(f)
            f2.ClearField("data")
            assert parsed.header == f2


def test_parse_frame_refuses_malformed_bytes() -> None:
    good = encode_tensor_frames("s", 0, 0, "t", torch.arange(10))[0]
    for bad in (good[:-3], good[:3] + b"\xff" * 12, b"\x0b\x00", good + b"\x42\x80"):
        with pytest.raises(ValueError):
            parse_frame(bad)


def test_shaper_models_delay_and_bandwidth() -> None:
    shaper = Shaper(NetworkShape(delay_ms=10.0, bandwidth_bps=8e6))  # 1 MB/s
    t0 = time.monotonic()
    first = shaper.release_time(100_000)  # 0.1 s on the link
    second = shaper.release_time(100_000)  # queued behind the first
    assert first - t0 == pytest.approx(0.11, abs=0.01)
    assert second - first == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError):
        NetworkShape(delay_ms=-1)


def test_aborts_of_sessions_never_opened_do_not_fill_the_session_limit() -> None:
    """A peer's ABORT for a session this side never opens leaves an inbox; those are evicted, not kept for good."""
    from parties.proto import transport_pb2
    from parties.transport import Inboxes, Limits

    inboxes = Inboxes(Limits(max_open_sessions=4))
    for i in range(20):
        inboxes.deliver(transport_pb2.Frame(session_id=f"refused-{i}", src_rank=1, kind=transport_pb2.FRAME_KIND_ABORT, reason="refused"))
    box = inboxes.open("next")  # would raise RESOURCE_EXHAUSTED if the aborted inboxes were kept
    assert box.opened and box.failure is None
    inboxes.deliver(transport_pb2.Frame(session_id="early", src_rank=1, kind=transport_pb2.FRAME_KIND_ABORT, reason="refused"))
    assert inboxes.open("early").failure is not None  # an abort that arrives before the open still fails the session


def test_tune_allocator_is_idempotent() -> None:
    """The allocator tuning an Endpoint applies is process-wide and applied once (glibc only)."""
    import platform

    from parties.transport import tune_allocator

    first = tune_allocator()
    assert tune_allocator() == first
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first


@pytest.mark.parametrize("chunk", [1 << 20, 4096], ids=["one-frame", "many-frames"])
def test_received_tensors_are_fresh_and_writable(chunk: int) -> None:
    """A reassembled tensor owns its memory: writing to it touches neither the frames it came from nor the sender's tensor."""
    import warnings

    from parties.transport import SessionInbox

    sent = torch.arange(3000, dtype=torch.int64).reshape(30, 100)
    frames = encode_tensor_frames("f", 0, 0, "t", sent, chunk_bytes=chunk)
    before = [bytes(f) for f in frames]
    inbox = SessionInbox("f")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable buffer" warning from torch
        for raw in frames:
            parsed = parse_frame(raw)
            inbox.deliver(parsed.header, parsed.data)
        got = inbox.get(time.monotonic() + 1.0).tensor
        assert torch.equal(got, sent) and got.dtype == sent.dtype
        got.add_(1)
    assert frames == before and torch.equal(sent, torch.arange(3000, dtype=torch.int64).reshape(30, 100))


def _loopback(limits: Limits = Limits()) -> Endpoint:
    """An endpoint whose peer is itself: what a session sends comes back to it, in order (one process, no peer)."""
    port = free_port()
    return Endpoint(0, f"127.0.0.1:{port}", f"127.0.0.1:{port}", limits=limits)


def test_point_to_point_and_collective_messages_are_matched_apart() -> None:
    """As torch.distributed does: a p2p message that comes while a collective is awaited (or the reverse) waits for its receive."""
    endpoint = _loopback()
    try:
        with endpoint.session("kinds", 10.0) as session:
            sent = [("p2p", torch.arange(3)), ("p2p.obj", torch.arange(4, dtype=torch.uint8)), ("all_reduce", torch.tensor([7])),
                    ("p2p", torch.arange(5) * 2), ("barrier", torch.empty(0, dtype=torch.int64))]
            for tag, tensor in sent:
                session.send_tensor(tag, tensor)
            assert torch.equal(session.recv_tensor("all_reduce"), torch.tensor([7]))  # two p2p messages kept aside
            assert session.aside == (2, 3 * 8 + 4)
            assert session.recv_tensor("barrier").numel() == 0  # and a third
            assert session.aside[0] == 3
            assert torch.equal(session.recv_tensor("p2p"), torch.arange(3))  # each kind in its sending order
            assert torch.equal(session.recv_tensor("p2p.obj"), torch.arange(4, dtype=torch.uint8))
            assert torch.equal(session.recv_tensor("p2p"), torch.arange(5) * 2)
            assert session.aside == (0, 0) and session.messages_received == 5
            # the reverse: collectives kept aside while a p2p message is awaited
            for tag, tensor in [("all_reduce", torch.tensor([1])), ("broadcast", torch.tensor([2])), ("p2p", torch.tensor([3]))]:
                session.send_tensor(tag, tensor)
            assert session.recv_tensor("p2p").item() == 3
            assert session.recv_tensor("all_reduce").item() == 1 and session.recv_tensor("broadcast").item() == 2
    finally:
        endpoint.close()


@pytest.mark.parametrize("order", ["direct", "aside"])
def test_a_mismatch_within_a_kind_still_fails_the_session(order: str) -> None:
    endpoint = _loopback()
    try:
        with endpoint.session("mismatch", 10.0) as session:
            if order == "direct":  # two collectives out of order
                session.send_tensor("all_reduce", torch.tensor([1]))
                expected, got = "broadcast", "all_reduce"
            else:  # a p2p message kept aside is not what the later p2p receive expects
                session.send_tensor("p2p.obj", torch.tensor([1], dtype=torch.uint8))
                session.send_tensor("all_reduce", torch.tensor([1]))
                assert session.recv_tensor("all_reduce").item() == 1
                expected, got = "p2p", "p2p.obj"
            with pytest.raises(SessionFailed) as err:
                session.recv_tensor(expected)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert f"expected a {expected!r} message, got {got!r}" in str(err.value)
            with pytest.raises(SessionFailed):  # the session stays failed
                session.recv_tensor(expected)
    finally:
        endpoint.close()


@pytest.mark.parametrize("limit", ["messages", "bytes"])
def test_what_is_kept_aside_is_bounded(limit: str) -> None:
    limits = Limits(max_aside_messages=3) if limit == "messages" else Limits(max_aside_bytes=100)
    endpoint = _loopback(limits)
    try:
        with endpoint.session("flood", 10.0) as session:
            for _ in range(4):
                session.send_tensor("p2p", torch.arange(4))  # 32 bytes each
            session.send_tensor("all_reduce", torch.tensor([1]))
            with pytest.raises(SessionFailed) as err:
                session.recv_tensor("all_reduce")
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "while waiting for a 'all_reduce' message" in str(err.value)
            with pytest.raises(SessionFailed):
                session.recv_tensor("p2p")  # nothing kept aside is handed out once the session failed
    finally:
        endpoint.close()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_round_trip(dtype: torch.dtype) -> None:
    """float16 and bfloat16 travel bit for bit, in one frame and in many, through frames and through a live endpoint."""
    from parties.transport import SessionInbox

    sent = torch.cat([torch.randn(3000), torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 65504.0, 1e-7])]).to(dtype)
    for chunk in (1 << 20, 1000):
        frames = encode_tensor_frames("h", 0, 0, "t", sent, chunk_bytes=chunk)
        assert transport_pb2.Frame.FromString(frames[0]).dtype == str(dtype).removeprefix("torch.")
        inbox = SessionInbox("h")
        for raw in frames:
            parsed = parse_frame(raw)
            inbox.deliver(parsed.header, parsed.data)
        got = inbox.get(time.monotonic() + 1.0).tensor
        assert got.dtype == dtype and torch.equal(got.view(torch.int16), sent.view(torch.int16))
    endpoint = _loopback()
    try:
        with endpoint.session("half", 10.0) as session:
            big = torch.randn(700, 1000).to(dtype)  # 1.4 MB: two frames
            session.send_tensor("x", big)
            session.send_tensor("x", sent[:7])
            assert torch.equal(session.recv_tensor("x").view(torch.int16), big.view(torch.int16))
            assert torch.equal(session.recv_tensor("x").view(torch.int16), sent[:7].view(torch.int16))
    finally:
        endpoint.close()
