"""Regularization weight validation: 0, a negative weight, NaN, +inf and
-inf are each rejected by the corrector-loss config with a ``ValueError``
that mentions the weight (an error naming what is wrong, not any
``ValueError``)."""

from __future__ import annotations

import math

import pytest

from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_raises_naming
from conformance.cases import Option, pid
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "regularization weight validation"

INVALID_WEIGHTS = [
    Option("zero", 0.0),
    Option("negative", -0.5),
    Option("nan", math.nan),
    Option("plus-inf", math.inf),
    Option("minus-inf", -math.inf),
]


@enforces("CONFIG-3")
@requires(Capability.WEIGHT_VALIDATION)
@pytest.mark.parametrize("weight", INVALID_WEIGHTS, ids=pid)
def check_rejects_invalid_weight(adapter: StepOutputLossAdapter, weight: Option) -> None:
    spec = RegularizationSpec("MSE", weight=float(weight.value))
    assert_raises_naming(
        lambda: adapter.build_corrector_config(None, spec),
        prop=PROP,
        what=f"regularization weight {weight.value}",
        inputs={"regularization": spec},
        must_mention=["weight"],
        exception=ValueError,
    )
