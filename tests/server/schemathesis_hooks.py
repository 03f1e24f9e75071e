"""schemathesis hooks for the coordinator's contract test (``test_schemathesis.py``; ``SCHEMATHESIS_HOOKS`` names this module).

Two things a JSON Schema cannot state, given to schemathesis here rather than left as failures:

* an uploaded ``image`` must be a real image of at least the patch grid per side (the schema marks it with
  ``x-image`` / ``x-min-side``); its strategy for image/png and image/jpeg draws such images
  (``MPCVIT_ST_MIN_SIDE``, from the document), where schemathesis would send its 1x1 sample file;
* a sealed share must open for its party (nothing outside the client can make one): on ``POST /v1/classify``
  a schema-valid request may be refused with 400, but only for that reason or an expired deadline; and a
  pixel array must be rectangular (JSON Schema has no 'every row the same length'): on the demo routes a
  schema-valid request may be refused with 422 for that reason only (``refusals_name_what_no_schema_states``);
  every other refusal of schema-valid data still fails.
"""

from __future__ import annotations

import io
import os

import schemathesis
from hypothesis import strategies as st
from PIL import Image

MIN_SIDE = int(os.environ.get("MPCVIT_ST_MIN_SIDE", "1"))
UNSTATED = {
    400: ("does not open", "has already expired", "low-order X25519 point"),
    422: ("must be a rectangular array",),  # JSON Schema cannot say 'every row the same length'
}


def _image(fmt: str) -> st.SearchStrategy[bytes]:
    side = st.integers(MIN_SIDE, MIN_SIDE + 24)

    def draw(args: tuple[int, int, str, int]) -> bytes:
        w, h, mode, colour = args
        out = io.BytesIO()
        Image.new(mode, (w, h), colour if mode == "L" else (colour,) * 3).save(out, fmt)
        return out.getvalue()

    return st.tuples(side, side, st.sampled_from(["L", "RGB"]), st.integers(0, 255)).map(draw)


schemathesis.openapi.media_type("image/png", _image("PNG"))
schemathesis.openapi.media_type("image/jpeg", _image("JPEG"))


@schemathesis.check
def refusals_name_what_no_schema_states(ctx, response, case):  # type: ignore[no-untyped-def]
    """A 400 to a schema-valid request is a box that does not open or an expired deadline, a 422 a ragged pixel array."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in UNSTATED:
        return None
    if meta.phase.name.value == "coverage" and isinstance(case.body, dict) and "" in case.body.values():
        return None  # the coverage phase sends an empty multipart field (model="", minLength 1) as a positive case
    detail = str(response.json().get("detail", ""))
    if not any(reason in detail for reason in UNSTATED[response.status_code]):
        raise AssertionError(f"schema-valid request refused with {response.status_code} for a reason the schema could state: {detail}")
    return None
