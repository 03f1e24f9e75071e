"""Published secure-inference figures the benchmark compares itself with, and the two network settings.

Source of the latencies: the MPCViT repository's README (Zeng et al., ICCV 2023),
measured with SecretFlow SPU, SEMI-2K two-party protocol, on the WAN setting
below, batch 1. Accuracies are the paper's (knowledge-distilled where marked).
The paper published neither rounds nor bytes. DESIGN.md ("numbers to beat")
carries the same table.

Networks (Cheetah's throttle script, used by MPCViT): LAN 3 Gbit/s with a
0.3 ms round trip, WAN 400 Mbit/s with a 40 ms round trip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Network:
    """A link between the two parties: round-trip time and bandwidth (each direction)."""

    name: str
    rtt_s: float
    bandwidth_bps: float

    def predict(self, compute_s: float, rounds: int, bytes_one_way: int) -> float:
        """Latency = compute + rounds x RTT + bytes / bandwidth.

        ``bytes_one_way`` is what the busier party sends; the two directions of
        a full-duplex link carry the two parties' messages at the same time.
        """
        return compute_s + rounds * self.rtt_s + 8.0 * bytes_one_way / self.bandwidth_bps

    def predict_exchange(self, compute_s: float, rounds: int, bytes_one_way: int) -> float:
        """The same with a round costing one one-way delay (RTT / 2).

        Every CrypTen round between two parties is a simultaneous exchange:
        both send, then both wait for the other's message, which arrives one
        one-way delay later. This is what the shaped transport measures.
        """
        return compute_s + rounds * self.rtt_s / 2 + 8.0 * bytes_one_way / self.bandwidth_bps

    def to_dict(self) -> dict[str, float | str]:
        return {"name": self.name, "rtt_ms": self.rtt_s * 1e3, "bandwidth_mbit_s": self.bandwidth_bps / 1e6}


NETWORKS: dict[str, Network] = {
    "lan": Network("lan", rtt_s=0.3e-3, bandwidth_bps=3e9),
    "wan": Network("wan", rtt_s=40e-3, bandwidth_bps=400e6),
}


@dataclass(frozen=True)
class Published:
    """One published figure: a model on a dataset, WAN latency in seconds, top-1 accuracy in %."""

    model: str
    dataset: str
    shape: str
    accuracy: float
    wan_seconds: float
    label: str


SOURCE = "MPCViT README (Zeng et al., ICCV 2023): SecretFlow SPU, SEMI-2K 2PC, WAN 400 Mbit/s 40 ms RTT, batch 1"

# our benchmark model label -> published row; shape 7_4_32 = CIFAR-10, 9_12_64 = Tiny-ImageNet
PUBLISHED: list[Published] = [
    Published("vit", "cifar10", "7_4_32", 93.97, 112.23, "softmax ViT"),
    Published("mpcformer", "cifar10", "7_4_32", 93.98, 66.98, "MPCFormer (KD)"),
    Published("thex", "cifar10", "7_4_32", 89.66, 52.39, "THE-X"),
    Published("mpcvit-mu0.7", "cifar10", "7_4_32", 94.27, 63.56, "MPCViT mu=0.7 (KD)"),
    Published("mpcvit-mu0.1", "cifar10", "7_4_32", 93.59, 48.03, "MPCViT mu=0.1 (KD)"),
    Published("vit", "tiny-imagenet", "9_12_64", 60.71, 1370.61, "softmax ViT"),
    Published("mpcformer", "tiny-imagenet", "9_12_64", 62.11, 903.57, "MPCFormer (KD)"),
    Published("thex", "tiny-imagenet", "9_12_64", 52.17, 421.98, "THE-X"),
    Published("mpcvit-mu0.7", "tiny-imagenet", "9_12_64", 63.03, 823.74, "MPCViT mu=0.7 (KD)"),
    Published("mpcvit-mu0.1", "tiny-imagenet", "9_12_64", 62.65, 220.69, "MPCViT mu=0.1 (KD)"),
]


def published_for(model: str, shape: str) -> Published | None:
    """The published WAN figure for our model label at an architecture shape, if the paper has one."""
    for row in PUBLISHED:
        if row.model == model and row.shape == shape:
            return row
    return None
