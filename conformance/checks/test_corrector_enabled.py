"""``corrector_enabled``: a corrector loss configured on a stepper whose step
has no corrector is a build-time error that mentions the corrector; without a
corrector loss such a step trains normally."""

from __future__ import annotations

import pytest
import torch

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.assertions import assert_close, assert_no_error, assert_raises_naming, fail
from conformance.cases import Option, feature_combinations, pid
from conformance.harness import describe, expected_training, step_totals, training_setup
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "corrector_enabled build-time check"


# Python's own error types for a bug in the code, not a config error that names the fix.
INTERNAL_ERRORS = (
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    NameError,
    NotImplementedError,
    RecursionError,
)


@enforces("ENABLED-1")
@requires(Capability.STEPPER)
@pytest.mark.parametrize("features", feature_combinations()[1:], ids=pid)
def check_corrector_loss_needs_corrector(adapter: StepOutputLossAdapter, features: Option) -> None:
    """The same stepper spec builds around a step *with* a corrector, and
    raises around one without: a config error (not an internal ``TypeError``,
    ``AttributeError``, ...) whose message mentions the corrector."""
    exclude, reg = features.value
    spec, with_corrector, _ = training_setup(1, exclude, reg, corrector_enabled=True)
    assert_no_error(
        lambda: adapter.build_stepper(spec, with_corrector),
        prop=PROP,
        what="building the same stepper around a step with a corrector",
        inputs=describe(spec.loss, "training", corrector_enabled=True),
    )
    spec, step, _ = training_setup(1, exclude, reg, corrector_enabled=False)
    inputs = describe(spec.loss, "training", corrector_enabled=False)
    err = assert_raises_naming(
        lambda: adapter.build_stepper(spec, step),
        prop=PROP,
        what="building a stepper with a corrector loss around a step without a corrector",
        inputs=inputs,
        must_mention=["corrector"],
    )
    if isinstance(err, INTERNAL_ERRORS):
        fail(
            PROP,
            "the error is an internal error type, not a config error naming the fix",
            inputs,
            "e.g. ValueError mentioning the corrector",
            f"{type(err).__name__}: {err}",
        )


@enforces("DEFAULT-1")
@requires(Capability.STEPPER)
def check_no_corrector_loss_without_corrector_trains(adapter: StepOutputLossAdapter) -> None:
    spec, step, batch = training_setup(1, corrector_enabled=False)
    inputs = describe(spec.loss, "training", corrector_enabled=False)
    # expected first: the stepper's optimizer may move the parameters
    expected = expected_training(spec, step, batch).main_totals[0]
    stepper = assert_no_error(
        lambda: adapter.build_stepper(spec, step), prop=PROP, what="build_stepper", inputs=inputs
    )
    outcome = assert_no_error(
        lambda: stepper.train_on_batch(batch), prop=PROP, what="train_on_batch", inputs=inputs
    )
    # the step's total in the contract's terms (no penalty here: the main loss)
    totals = step_totals(outcome, 1, with_penalty=False)
    assert_close(
        None if totals is None else torch.tensor(totals[0]),
        expected,
        prop=PROP,
        quantity="total of step 0",
        inputs=inputs,
        meaning="the plain main loss",
        rtol=1e-4,
    )
