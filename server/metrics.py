"""Prometheus metrics of one coordinator (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Container

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# The ``model`` label takes a served model's name, one of these fixed values, or UNKNOWN_MODEL: a client
# cannot make new series by sending made-up names.
FIXED_MODEL_LABELS = ("", "compare")
UNKNOWN_MODEL = "_unknown"


def model_label(name: str, known: Container[str]) -> str:
    """The ``model`` label for a request that named ``name``: itself if served (or fixed), else ``UNKNOWN_MODEL``."""
    return name if name in FIXED_MODEL_LABELS or name in known else UNKNOWN_MODEL


class Metrics:
    """Requests, latency, secure-forward rounds and bytes per model, errors, queue length."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mpcvit_requests", "HTTP requests answered", ["endpoint", "model", "status"], registry=r)
        self.latency = Histogram("mpcvit_request_latency_seconds", "HTTP request latency", ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.forwards = Counter("mpcvit_secure_forwards", "secure forwards run by the parties", ["model"], registry=r)
        self.batch_size = Histogram("mpcvit_batch_size", "requests per secure forward", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.rounds = Counter("mpcvit_rounds", "communication rounds of secure forwards (max over the parties)", ["model"], registry=r)
        self.bytes = Counter("mpcvit_bytes", "bytes sent by both parties in secure forwards", ["model"], registry=r)
        self.forward_seconds = Histogram("mpcvit_secure_forward_seconds", "wall time of one secure forward", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("mpcvit_errors", "failed requests by kind", ["kind"], registry=r)
        self.material_mismatches = Counter("mpcvit_material_mismatches", "secure forwards whose parties held different dealer "
                                           "material (aborted before answering, retried once)", ["model"], registry=r)
        self.implausible = Counter("mpcvit_implausible_answers", "demo-mode answers refused by the integrity net "
                                   "(garbage logits, never returned)", ["model"], registry=r)
        self.queue_length = Gauge("mpcvit_queue_length", "requests waiting for a secure forward", registry=r)
        self.pairs_in_rotation = Gauge("mpcvit_party_pairs_in_rotation", "party pairs that take sessions now", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
