"""The result decomposes: ``regularization`` is None exactly when the penalty
is off, and ``total == main_total + regularization`` of the result's own
parts (whether those parts are right is what the swap and penalty checks
test: one check, one property)."""

from __future__ import annotations

import pytest

from conformance.adapter import StepOutputLossAdapter
from conformance.assertions import assert_close, assert_true
from conformance.cases import Option, feature_combinations, main_case, pid
from conformance.harness import describe, run_loss
from conformance.requirements import enforces

PROP = "total() decomposition"
STEP = 1


@enforces("TOTAL-1")
@pytest.mark.parametrize("features", feature_combinations(), ids=pid)
def check_total_is_main_plus_regularization(
    adapter: StepOutputLossAdapter, features: Option
) -> None:
    exclude, reg = features.value
    case = main_case()
    spec = case.spec(exclude=exclude, regularization=reg)
    output, uncorrected, target = case.fresh()
    inputs = describe(spec, case.id, step=STEP)
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    assert_true(
        (result.regularization is None) == (reg is None),
        prop=PROP,
        problem="regularization must be None exactly when the penalty is off",
        inputs=inputs,
        expected="None" if reg is None else "a tensor",
        actual=repr(result.regularization),
    )
    # the decomposition of the implementation's own parts: whether main_total
    # and the penalty are right is what the swap and penalty checks test
    own = result.main_total + (0.0 if result.regularization is None else result.regularization)
    assert_close(
        result.total,
        own,
        prop=PROP,
        quantity="total vs the result's own main_total + regularization",
        inputs=inputs,
        meaning="main_total + regularization (the implementation's own parts)",
        alternatives={}
        if result.regularization is None
        else {"main_total alone (regularization left out)": result.main_total},
    )
