"""Pre-corrector optimization: the main loss sees ``uncorrected`` in place of
``output`` for every corrected variable that is not excluded, and ``output``
for every other variable (not corrected, or excluded)."""

from __future__ import annotations

import pytest

from conformance.adapter import StepOutputLossAdapter
from conformance.cases import (
    MAIN_LOSS_OPTIONS,
    WEIGHTED_MAIN,
    Case,
    Option,
    main_case,
    pid,
    standard_cases,
)
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.requirements import enforces

PROP = "pre-corrector target swap"
STEP = 2


@enforces("SWAP-1", "CONV-MAIN-1", "AREA-1", "CONV-AREA-1", "ENSEMBLE-1", "CONV-ENS-1")
@pytest.mark.parametrize("main", MAIN_LOSS_OPTIONS, ids=pid)
@pytest.mark.parametrize("case", standard_cases(), ids=pid)
def check_swap_uses_uncorrected(adapter: StepOutputLossAdapter, case: Case, main: Option) -> None:
    """No exclusions: every corrected variable is scored on its uncorrected
    value, every other variable on its output."""
    spec = case.spec(exclude=(), main=main.value)
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    assert_main_loss(
        result, spec, output, uncorrected, target, STEP, prop=PROP, inputs=describe(spec, case.id)
    )


PARTIAL = [
    Option("exclude-ps", ("ps",)),
    Option("exclude-q_1-and-q2m", ("q_1", "q2m")),
]


@enforces("SWAP-1")
@pytest.mark.parametrize("exclude", PARTIAL, ids=pid)
def check_swap_partial(adapter: StepOutputLossAdapter, exclude: Option) -> None:
    """Explicit full names stay corrected (the same request in the exclusion
    and the opt-in vocabulary); the other corrected variables are swapped."""
    case = main_case()
    spec = case.spec(exclude=exclude.value, main=WEIGHTED_MAIN)
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    assert_main_loss(
        result, spec, output, uncorrected, target, STEP, prop=PROP, inputs=describe(spec, case.id)
    )
