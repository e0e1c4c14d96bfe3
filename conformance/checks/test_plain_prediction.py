"""Plain prediction detaches the pre-correction values (only training with a
corrector feature keeps them on the autograd graph), even on a stepper
configured with both features. What is checked is what the implementation
returns: its ``uncorrected`` values, or, for an implementation that carries
correction deltas, its deltas (``PredictedStep``). The corrected ``output``
may be on the graph either way (plain prediction need not run under
``torch.no_grad``)."""

from __future__ import annotations

from conformance.adapter import (
    Capability,
    PredictedStep,
    RegularizationSpec,
    StepOutputLossAdapter,
)
from conformance.assertions import fail
from conformance.harness import describe, training_setup
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "plain prediction detaches the pre-correction values"


@enforces("DETACH-1")
@requires(Capability.STEPPER)
def check_plain_prediction_detaches(adapter: StepOutputLossAdapter) -> None:
    spec, step, batch = training_setup(2, (), RegularizationSpec("MSE", weight=0.7))
    inputs = describe(spec.loss, "prediction-2-steps")
    steps = adapter.build_stepper(spec, step).predict(batch)
    if len(steps) != 2:
        fail(PROP, "predict must return one step per target", inputs, 2, len(steps))
    for i, predicted in enumerate(steps):
        if not isinstance(predicted, PredictedStep):
            output, uncorrected = predicted
            predicted = PredictedStep(output, uncorrected=uncorrected)
        kind, values = predicted.pre_correction
        if not values:
            fail(PROP, f"step {i}: the corrector ran but {kind} is empty", inputs)
        attached = sorted(k for k, v in values.items() if v.requires_grad)
        if attached:
            fail(
                PROP,
                f"step {i}: {kind} is still on the autograd graph",
                inputs,
                f"every {kind} tensor detached",
                f"attached: {attached}",
            )
