"""Checks of argument values, each raising ``ParameterError`` that names the parameter.

The library checks every value once, where it is used; the CLI shows the same
message under the flag that set it.
"""

from __future__ import annotations

from kerasgen.errors import ParameterError

MAX_SEED = 2**32 - 1  # seeds are 32-bit: the draws hash 32 bits, NumPy seeds take 32


def at_least(name: str, value, low, note: str = "") -> None:
    """``value >= low``; ``note`` says what the edge means (``"0: off"``)."""
    if not _is_number(value) or value < low:
        extra = f" ({note})" if note else ""
        raise ParameterError(name, f"must be at least {low}{extra}, got {value!r}")


def at_most(name: str, value, high) -> None:
    if not _is_number(value) or value > high:
        raise ParameterError(name, f"must be at most {high:,}, got {value!r}")


def positive(name: str, value) -> None:
    if not _is_number(value) or not value > 0:
        raise ParameterError(name, f"must be > 0, got {value!r}")


def in_range(name: str, value, low, high, low_open: bool = False, high_open: bool = False) -> None:
    """``low <= value <= high``, either end open (excluded) if asked."""
    above = _is_number(value) and (value > low if low_open else value >= low)
    below = _is_number(value) and (value < high if high_open else value <= high)
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ParameterError(name, f"must be in {interval}, got {value!r}")


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ParameterError(name, f"{value!r} is not one of " + ", ".join(map(str, choices)))


def seed(name: str, value) -> None:
    """None (a fresh seed each time) or a whole number from 0 to MAX_SEED."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ParameterError(name, f"must be a whole number from 0 to {MAX_SEED}, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
