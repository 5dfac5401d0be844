"""Type and range checks for parameters, shared by every module that takes them.

``True`` is an ``int`` in Python and NaN is a ``float``: neither is ever a count or a rate
here, so these helpers refuse both where a whole or finite number is asked for.
"""
from __future__ import annotations

import math
import numbers

from .errors import ParameterError


def is_int(value) -> bool:
    """A whole number (any integral type, numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value, finite: bool = False) -> bool:
    """A real number, not a bool; with ``finite``, not NaN or infinite either."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and (not finite or math.isfinite(value)))


def check_int(name: str, value, minimum: int) -> None:
    if not is_int(value):
        raise ParameterError(name, f"must be a whole number >= {minimum}, not {value!r}")
    if value < minimum:
        raise ParameterError(name, f"must be >= {minimum}, got {value}")


def check_positive(name: str, value) -> None:
    if not is_number(value, finite=True):
        raise ParameterError(name, f"must be a finite number > 0, not {value!r}")
    if value <= 0:
        raise ParameterError(name, f"must be > 0, got {value}")
