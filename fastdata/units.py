"""Byte sizes written the way people write them: ``256MB``, ``1.5GiB``, ``4096``."""

from __future__ import annotations

import re

from fastdata.errors import FastdataConfigError

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: an int, or a number with a unit (KB/MB/GB/TB decimal, KiB/MiB/GiB binary).

    Raises:
        FastdataConfigError: the value is not a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FastdataConfigError(f"size must not be negative, got {value}")
        return value
    m = _SIZE.match(str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise FastdataConfigError(f"invalid size {value!r}; write e.g. 4096, 256MB or 1.5GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    """``n`` bytes as a short human string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
