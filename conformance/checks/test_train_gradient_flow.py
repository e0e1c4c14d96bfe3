"""Training: gradients flow through the correction. A train stepper around
the suite's step (a model parameter ``gain`` upstream of a corrector with
parameter ``theta``) trained on 2 steps gives the closed-form gradients for
every feature combination; with either feature on they include the path
through ``uncorrected`` (lost if the stepper detaches it)."""

from __future__ import annotations

import pytest

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.assertions import assert_close, assert_no_error
from conformance.cases import Option, feature_combinations, pid
from conformance.harness import describe, expected_training, training_setup
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "training gradients through the correction"
N_STEPS = 2


def gradient_tolerance(expected):  # noqa: ANN001, ANN201
    """float32 rollout against float64: the gain gradient sums terms of both
    signs, so its relative error is larger than a loss value's."""
    return {"rtol": 1e-3, "atol": 1e-5 * float(expected.abs().max()) + 1e-9}


@enforces("GRAD-1")
@requires(Capability.STEPPER)
@pytest.mark.parametrize("features", feature_combinations(), ids=pid)
def check_train_gradients(adapter: StepOutputLossAdapter, features: Option) -> None:
    exclude, reg = features.value
    spec, step, batch = training_setup(N_STEPS, exclude, reg)
    inputs = describe(spec.loss, "training-2-steps", n_forward_steps=N_STEPS, accumulation=False)
    expected = expected_training(spec, step, batch)
    detached = expected_training(spec, step, batch, detach_uncorrected=True)
    stepper = adapter.build_stepper(spec, step)
    outcome = assert_no_error(
        lambda: stepper.train_on_batch(batch), prop=PROP, what="train_on_batch", inputs=inputs
    )
    for name, want in expected.gradients.items():
        got = outcome.gradients.get(name)
        assert_close(
            got,
            want,
            prop=PROP,
            quantity=f"gradient of the suite step's {name!r}",
            inputs=inputs,
            meaning="autograd of the float64 closed-form rollout",
            alternatives={"the gradient with uncorrected detached": detached.gradients[name]}
            if exclude is not None or reg is not None
            else {},
            **gradient_tolerance(want),
        )
