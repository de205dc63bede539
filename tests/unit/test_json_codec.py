"""Number formatting of TF Serving's REST responses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.model_server.json_codec import format_decimal


@pytest.mark.parametrize(
    ("value", "single", "expected"),
    [
        (3.0, True, "3.0"),
        (0.5, True, "0.5"),
        (float(np.float32(0.91)), True, "0.91"),
        (3e-05, False, "3e-05"),
        (9e06, False, "9e+06"),
        (1 / 3, False, "0.33333333333333331"),
        (float(np.float32(1 / 3)), True, "0.333333343"),
        (math.nan, True, "NaN"),
        (math.inf, False, "Infinity"),
        (-math.inf, False, "-Infinity"),
    ],
)
def test_format_decimal_matches_tf_serving(value, single, expected):
    assert format_decimal(value, single_precision=single) == expected
