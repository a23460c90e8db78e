"""Byte sizes as people write and read them: `--shard-size 500MB` in, `1.2 GB` out.

Decimal units, as the Hub and disk vendors count; binary ones (KiB, MiB, GiB) are accepted.
"""

from __future__ import annotations

import re

from .errors import PackError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str | int) -> int:
    """'500MB', '1GB', '1.5GiB' or a byte count → bytes (decimal units, as the Hub counts)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise PackError(
                f"cannot read size {text!r}: use bytes or a unit, e.g. 500MB or 1GB")
        unit = (match.group(2) or "").lower().removesuffix("b")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise PackError(f"shard size must be positive, got {text!r}")
    return value


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
