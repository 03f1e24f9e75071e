"""How byte counts are shown to people: binary units everywhere (B, KiB, MiB, GiB).

The CLI (``mpcvit demo``, ``mpcvit classify``, ``mpcvit eval-private``) formats
every byte count with :func:`format_bytes`; the demo page's ``fmtBytes``
(server/static/app.js) uses the same units, so one forward's traffic reads the
same wherever it is shown.
"""

from __future__ import annotations

UNITS: tuple[str, ...] = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: float | None, digits: int = 1) -> str:
    """``n`` bytes in binary units: ``512 B``, ``3.4 KiB``, ``4.8 MiB``, ``2.9 GiB``; ``?`` for None.

    ``digits``: decimals after KiB and above (whole bytes have none).
    """
    if n is None:
        return "?"
    value = float(n)
    for unit in UNITS:
        if abs(round(value, 0 if unit == "B" else digits)) < 1024 or unit == UNITS[-1]:  # never "1024.0 KiB"
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
