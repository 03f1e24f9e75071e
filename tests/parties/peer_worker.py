"""A peer party process for the transport tests: runs sessions of all_reduce rounds, or dies mid-session."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch

from parties.communicator import GrpcCommunicator
from parties.tls import channel_credentials, server_credentials
from parties.transport import Endpoint


def all_reduce_rounds(comm: GrpcCommunicator, offset: int, rounds: int) -> list[int]:
    """Round i: this party contributes offset + i; returns the sums."""
    return [int(comm.all_reduce(torch.tensor([offset + i], dtype=torch.int64)).item()) for i in range(rounds)]


def run_peer(
    rank: int, ports: tuple[int, int], certs_dir: str | None, sessions: list[tuple[str, int, int]], die_after: int | None = None
) -> None:
    """Serve ``sessions`` = [(session_id, offset, rounds)] concurrently; SIGKILL self after ``die_after`` rounds."""
    role = f"party{rank}"
    endpoint = Endpoint(
        rank,
        f"127.0.0.1:{ports[rank]}",
        f"127.0.0.1:{ports[1 - rank]}",
        server_credentials=server_credentials(certs_dir, role) if certs_dir else None,
        channel_credentials=channel_credentials(certs_dir, role) if certs_dir else None,
    )

    def one(session_id: str, offset: int, rounds: int) -> None:
        with endpoint.session(session_id, 60.0) as session:
            comm = GrpcCommunicator(session)
            if die_after is not None:
                all_reduce_rounds(comm, offset, die_after)
                time.sleep(0.5)  # its last frame is queued, not yet sent (stream mode): let it leave, then die
                os.kill(os.getpid(), signal.SIGKILL)
            all_reduce_rounds(comm, offset, rounds)

    threads = [threading.Thread(target=one, args=s) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)  # let the last frames leave before closing the stream
    endpoint.close()
