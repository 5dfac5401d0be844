"""The shared parameter checks: bools are never counts, NaN and infinity are never rates."""
import math

import numpy as np
import pytest

from midilstm.checks import check_int, check_positive, is_int, is_number
from midilstm.errors import ParameterError


@pytest.mark.parametrize("value, whole, number, finite", [
    (3, True, True, True), (np.int64(3), True, True, True), (np.uint8(0), True, True, True),
    (True, False, False, False), (np.bool_(True), False, False, False),
    (2.5, False, True, True), (np.float32(2.5), False, True, True),
    (math.nan, False, True, False), (-math.inf, False, True, False),
    ("3", False, False, False), (None, False, False, False), ([1], False, False, False)])
def test_what_counts_as_a_whole_or_finite_number(value, whole, number, finite):
    assert is_int(value) is whole
    assert is_number(value) is number
    assert is_number(value, finite=True) is finite


def test_checks_name_the_parameter_and_the_reason():
    check_int("epochs", 1, 1)
    check_positive("lr", 1e-9)
    with pytest.raises(ParameterError, match=r"^parameter epochs: must be >= 1, got 0$"):
        check_int("epochs", 0, 1)
    with pytest.raises(ParameterError, match=r"^parameter epochs: must be a whole number >= 1, "
                                             r"not True$"):
        check_int("epochs", True, 1)
    with pytest.raises(ParameterError, match=r"^parameter lr: must be a finite number > 0, "
                                             r"not nan$"):
        check_positive("lr", math.nan)
    with pytest.raises(ParameterError, match=r"^parameter lr: must be > 0, got -1$"):
        check_positive("lr", -1)
