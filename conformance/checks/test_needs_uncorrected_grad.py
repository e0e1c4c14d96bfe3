"""``needs_uncorrected_grad`` is True iff pre-corrector optimization or
regularization is configured (the stepper then keeps ``uncorrected`` on the
autograd graph)."""

from __future__ import annotations

import pytest

from conformance.adapter import StepOutputLossAdapter
from conformance.assertions import assert_true
from conformance.cases import Option, feature_combinations, main_case, pid
from conformance.harness import describe
from conformance.requirements import enforces

PROP = "needs_uncorrected_grad"


@enforces("NEEDS-1")
@pytest.mark.parametrize("features", feature_combinations(), ids=pid)
def check_needs_uncorrected_grad(adapter: StepOutputLossAdapter, features: Option) -> None:
    exclude, reg = features.value
    case = main_case()
    spec = case.spec(exclude=exclude, regularization=reg)
    expected = exclude is not None or reg is not None
    actual = adapter.build_loss(spec).needs_uncorrected_grad
    assert_true(
        bool(actual) == expected,
        prop=PROP,
        problem="needs_uncorrected_grad must be True iff either feature is configured",
        inputs=describe(spec, case.id),
        expected=expected,
        actual=actual,
    )
