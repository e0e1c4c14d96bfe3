"""With neither feature configured the loss is a pass-through to the step
loss: the main loss sees ``output`` even for corrected variables, there is no
regularization, and ``total == main_total``."""

from __future__ import annotations

import pytest

from conformance.adapter import StepOutputLossAdapter
from conformance.assertions import assert_close, assert_true
from conformance.cases import MAIN_LOSS_OPTIONS, Case, Option, pid, standard_cases
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.requirements import enforces

PROP = "pass-through to the step loss"
STEP = 3


@enforces("PASS-1", "CONV-MAIN-1", "AREA-1", "CONV-AREA-1", "ENSEMBLE-1", "CONV-ENS-1")
@pytest.mark.parametrize("main", MAIN_LOSS_OPTIONS, ids=pid)
@pytest.mark.parametrize("case", standard_cases(), ids=pid)
def check_pass_through_equals_step_loss(
    adapter: StepOutputLossAdapter, case: Case, main: Option
) -> None:
    spec = case.spec(main=main.value)
    output, uncorrected, target = case.fresh()
    inputs = describe(spec, case.id, step=STEP)
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    assert_main_loss(result, spec, output, uncorrected, target, STEP, prop=PROP, inputs=inputs)
    assert_true(
        result.regularization is None,
        prop=PROP,
        problem="no regularization is configured, so it must be None",
        inputs=inputs,
        expected="None",
        actual=repr(result.regularization),
    )
    assert_close(
        result.total,
        result.main_total,
        prop=PROP,
        quantity="total",
        inputs=inputs,
        meaning="main_total",
    )
