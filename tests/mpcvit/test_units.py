"""Byte counts shown to people: binary units, one helper (mpcvit/units.py)."""

from __future__ import annotations

import pytest

from mpcvit.units import format_bytes


@pytest.mark.parametrize(("n", "text"), [
    (None, "?"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5_000_000, "4.8 MiB"), (1024**2 - 1, "1.0 MiB"), (3 * 1024**3, "3.0 GiB"),
])
def test_format_bytes_uses_binary_units(n: int | None, text: str) -> None:
    assert format_bytes(n) == text


def test_format_bytes_digits() -> None:
    assert format_bytes(5_000_000, digits=2) == "4.77 MiB"
