"""CrypTen's communicator and generator slots are per thread inside ``thread_communicator`` (concurrent sessions)."""

from __future__ import annotations

import threading

import torch

from protocols.crypten_compat import crypten, current_communicator, thread_communicator
from protocols.planning import OfflineCommunicator, is_offline, offline


def test_each_thread_sees_its_own_communicator_and_generator_slots() -> None:
    seen: dict[int, tuple] = {}
    barrier = threading.Barrier(2)

    def session(rank: int) -> None:
        comm = OfflineCommunicator(rank)
        with thread_communicator(comm, own_generators=True):
            crypten.generators["prev"][torch.device("cpu")] = f"key-{rank}"
            barrier.wait()  # both threads are inside at once
            seen[rank] = (crypten.communicator.get() is comm, crypten.communicator.get().get_rank(),
                          crypten.generators["prev"][torch.device("cpu")])
            barrier.wait()
        seen[rank] += (current_communicator(),)

    threads = [threading.Thread(target=session, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {0: (True, 0, "key-0", None), 1: (True, 1, "key-1", None)}
    assert current_communicator() is None
    assert "key-0" not in crypten.generators["prev"].values()  # the process's slots were never touched


class _Session:
    """Stands for a session's communicator (only its rank is read)."""

    def get_rank(self) -> int:
        return 1


def test_offline_nests_inside_a_thread_communicator_and_restores_it() -> None:
    outer = _Session()
    with thread_communicator(outer):
        assert not is_offline()
        with offline() as stand_in:
            assert is_offline()
            assert crypten.communicator.get() is stand_in and stand_in is not outer and stand_in.get_rank() == 1
        assert crypten.communicator.get() is outer
