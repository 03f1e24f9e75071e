"""What a private answer may reveal to the client: the model owner's per-model output policy.

Party 0 (the model owner) sets it in the checkpoint's ``meta.json`` under
``"output_policy"``; party 0 sends it to party 1 with the architecture when
the model is loaded, and both parties enforce it in every forward. The
coordinator never chooses it (nothing it sends carries a policy) and only
reports it (``/v1/models``).

* ``logits`` (the default): each party seals its share of the fixed-point
  logits; the client learns the whole logit vector.
* ``topk:K`` (1 <= K < classes): the parties compute the indices of the K
  largest logits under 2PC (``protocols.argmax``); each party seals its share
  of the K indices (int64, scale 1, largest first); the client learns the
  ranked top K classes and nothing else of the logits.
* ``label``: as ``topk:1``, and named so: the client learns the class only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOGITS = "logits"
LABEL = "label"
_TOPK = re.compile(r"^topk:([1-9][0-9]{0,3})$")


class PolicyError(ValueError):
    """An output policy that is not one of ``logits``, ``label``, ``topk:K``."""


@dataclass(frozen=True)
class OutputPolicy:
    """``kind`` is "logits", "label" or "topk"; ``k`` the number of indices revealed (0 for logits)."""

    kind: str = LOGITS
    k: int = 0

    @classmethod
    def parse(cls, text: object, num_classes: int | None = None) -> "OutputPolicy":
        """``logits`` | ``label`` | ``topk:K``; with ``num_classes``, K must be below it (K = classes reveals the ranking of all)."""
        if text is None or text == "":
            return cls()
        if not isinstance(text, str):
            raise PolicyError(f"an output policy is a string, got {type(text).__name__}")
        if text == LOGITS:
            return cls()
        if text == LABEL:
            policy = cls(LABEL, 1)
        else:
            m = _TOPK.match(text)
            if m is None:
                raise PolicyError(f"unknown output policy {text!r} (logits, label or topk:K)")
            policy = cls("topk", int(m.group(1)))
        if num_classes is not None and policy.k >= max(num_classes, 2) and policy.kind == "topk":
            raise PolicyError(f"topk:{policy.k} needs K below the model's {num_classes} classes")
        return policy

    @property
    def reveals_logits(self) -> bool:
        return self.kind == LOGITS

    @property
    def indices(self) -> int:
        """How many class indices an answer holds (0: it holds the logits)."""
        return self.k

    def output_shape(self, num_classes: int) -> tuple[int, ...]:
        """The shape of one answer's share: (classes,) for logits, (K,) for indices."""
        return (num_classes,) if self.reveals_logits else (self.k,)

    def __str__(self) -> str:
        return LOGITS if self.kind == LOGITS else LABEL if self.kind == LABEL else f"topk:{self.k}"
