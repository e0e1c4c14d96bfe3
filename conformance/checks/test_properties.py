"""Property-based checks: for *any* drawn input (``conformance.strategies``),
the implementation agrees with the independent float64 oracle
(``conformance.oracle``) on the target swap, the name-and-prefix matching, the
penalty and the ``total`` decomposition, and the step decay touches the main
loss only.

Fast by default (a few derandomized examples); ``--hypothesis-profile
thorough`` runs hundreds. A failure prints the minimal falsifying case.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from conformance import oracle
from conformance.adapter import LossResult, StepOutputLossAdapter
from conformance.assertions import assert_close
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.requirements import breaking, enforces
from conformance.strategies import PropertyCase, loss_cases, property_settings

PROP = "agreement with the oracle on random inputs"


def _literal_names(case: PropertyCase) -> contextlib.AbstractContextManager[None]:
    """Failing to build or call the loss on a case whose names have regex
    metacharacters breaks NAMES-1 (names are literal text); other cases blame
    the check's own requirements."""
    if any(re.search(r"[^\w]", n) for n in case.spec.names):
        return breaking("NAMES-1")
    return contextlib.nullcontext()


def _run(adapter: StepOutputLossAdapter, case: PropertyCase, step: int) -> LossResult:
    output, uncorrected, target = case.tensors()
    with warnings.catch_warnings():  # warn-once behaviour has checks of its own
        warnings.simplefilter("ignore")
        return run_loss(adapter.build_loss(case.spec), output, uncorrected, target, step)


@enforces("SWAP-1", "MATCH-1", "REG-2", "TOTAL-1", "AREA-1", "NAMES-1")
def check_random_case_matches_oracle(adapter: StepOutputLossAdapter) -> None:
    """Swap (with the matcher's rules on tricky names), penalty and total
    against the oracle, for a random case."""
    given_data(_matches_oracle, adapter)


@enforces("REG-3", "NAMES-1")
def check_step_decay_touches_main_loss_only(adapter: StepOutputLossAdapter) -> None:
    """Between step 0 and step ``s`` the main loss scales by
    ``(1 + c*s)^-1/2`` and the penalty does not change at all."""
    given_data(_step_decay_on_main_only, adapter)


def given_data(
    body: Callable[[StepOutputLossAdapter, st.DataObject], None], adapter: StepOutputLossAdapter
) -> None:
    """Run ``body`` as a hypothesis test with the settings in effect *now*
    (the profile loaded for this run), not those at import time."""
    given(data=st.data())(property_settings()(lambda data: body(adapter, data)))()


def _matches_oracle(adapter: StepOutputLossAdapter, data: st.DataObject) -> None:
    case = data.draw(loss_cases(adapter.capabilities), label="case")
    output, uncorrected, target = case.tensors()
    spec, step = case.spec, case.step
    inputs = describe(spec, "drawn", step=step, seed=case.seed)
    with _literal_names(case):
        result = _run(adapter, case, step)
    area = ("AREA-1",) if spec.main.loss_type == "AreaWeightedMSE" else ()
    with breaking("SWAP-1", "MATCH-1", *area):
        assert_main_loss(result, spec, output, uncorrected, target, step, prop=PROP, inputs=inputs)
    if spec.regularization is None:
        with breaking("TOTAL-1"):
            assert result.regularization is None, f"{PROP}: regularization must be None when off"
        return _total_matches(result, spec, output, uncorrected, target, step, inputs)
    with breaking("REG-2"):
        assert_close(
            result.regularization,
            oracle.penalty(spec, output, uncorrected),
            prop=PROP,
            quantity="regularization",
            inputs=inputs,
            meaning="weight * mean over corrected channels of L(correction / std, 0)",
        )
    _total_matches(result, spec, output, uncorrected, target, step, inputs)


def _total_matches(result, spec, output, uncorrected, target, step, inputs) -> None:  # noqa: ANN001
    with breaking("TOTAL-1"):
        assert_close(
            result.total,
            oracle.total(spec, output, uncorrected, target, step),
            prop=PROP,
            quantity="total",
            inputs=inputs,
            meaning="main_total + regularization",
        )


def _step_decay_on_main_only(adapter: StepOutputLossAdapter, data: st.DataObject) -> None:
    case = data.draw(loss_cases(adapter.capabilities, regularization=True), label="case")
    step = max(case.step, 1)
    spec = case.spec
    inputs = describe(spec, "drawn", step=step, seed=case.seed)
    with _literal_names(case):
        at_0, at_s = _run(adapter, case, 0), _run(adapter, case, step)
    assert_close(
        at_s.main_total,
        at_0.main_total * oracle.step_weight(spec, step),
        prop="step decay on the main loss only",
        quantity=f"main_total at step {step}",
        inputs=inputs,
        meaning="main_total at step 0 times (1 + c*step)^-1/2",
    )
    assert at_0.regularization is not None and at_s.regularization is not None
    assert_close(
        at_s.regularization,
        at_0.regularization,
        prop="step decay on the main loss only",
        quantity=f"regularization at step {step}",
        inputs=inputs,
        meaning="the penalty at step 0 (the penalty has no step decay)",
        alternatives={
            "the step-0 penalty decayed": at_0.regularization * oracle.step_weight(spec, step)
        },
    )
