"""Plain prediction detaches ``uncorrected`` (only training with a corrector
feature keeps it on the graph), even on a stepper configured with both
features."""

from __future__ import annotations

from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import fail
from conformance.harness import describe, training_setup
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "plain prediction detaches uncorrected"


@enforces("DETACH-1")
@requires(Capability.STEPPER)
def check_plain_prediction_detaches(adapter: StepOutputLossAdapter) -> None:
    spec, step, batch = training_setup(2, (), RegularizationSpec("MSE", weight=0.7))
    inputs = describe(spec.loss, "prediction-2-steps")
    steps = adapter.build_stepper(spec, step).predict(batch)
    if len(steps) != 2:
        fail(PROP, "predict must return one (output, uncorrected) per step", inputs, 2, len(steps))
    for i, (_, uncorrected) in enumerate(steps):
        if not uncorrected:
            fail(PROP, f"step {i}: the corrector ran but uncorrected is empty", inputs)
        attached = sorted(k for k, v in uncorrected.items() if v.requires_grad)
        if attached:
            fail(
                PROP,
                f"step {i}: uncorrected is still on the autograd graph",
                inputs,
                "every uncorrected tensor detached",
                f"attached: {attached}",
            )
